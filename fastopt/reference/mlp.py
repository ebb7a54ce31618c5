"""Pure-NumPy twins of fastopt._mlp_kernels: same names, same signatures, same operation order.

They are the test oracle and the baseline; they check sizes as the kernels do (ValueError), and
n_threads is checked and otherwise ignored. Column sums run in
float64 (np.sum over axis 0 adds rows in order, like the kernels).
"""
import numpy as np

from ._contract import check_shapes, threads

GRAIN = 32768


def _check_labels(y, c):
    bad = np.flatnonzero((y < 0) | (y >= c))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"y must hold class indices in [0, {c}), got y[{i}] = {y[i]}")


def bias_relu_forward(z, b, out, n_threads=1):
    """out = max(z + b, 0) (out may be z)."""
    check_shapes(z.shape[1:], b=b)
    check_shapes(z.shape, out=out)
    threads(n_threads)
    np.add(z, b, out=out)
    np.maximum(out.dtype.type(0), out, out=out)     # 0 first: relu(-0.0) is -0.0, as in the kernel


def relu_backward_inplace(dout, out, n_threads=1):
    """dout[out <= 0] = 0 (a select: NaN upstream grads are zeroed)."""
    check_shapes(dout.shape, out=out)
    threads(n_threads)
    np.copyto(dout, 0, where=~(out > 0))


def bias_grad(dout, db, n_threads=1):
    """db = dout.sum(0), summed in double."""
    check_shapes(dout.shape[1:], db=db)
    threads(n_threads)
    db[...] = dout.sum(axis=0, dtype=np.float64)


def relu_bias_backward(dout, out, db, n_threads=1):
    """relu_backward_inplace(dout, out); bias_grad(dout, db)."""
    check_shapes(dout.shape, out=out)
    check_shapes(dout.shape[1:], db=db)
    threads(n_threads)
    relu_backward_inplace(dout, out)
    bias_grad(dout, db)


def batchnorm_relu_forward(z, b, gamma, beta, eps, momentum, running_mean, running_var,
                           out, mean, inv_std, n_threads=1):
    """Training-mode out = relu(gamma * (a - mean) * inv_std + beta) with a = z + b."""
    check_shapes(z.shape[1:], b=b, gamma=gamma, beta=beta, running_mean=running_mean,
                 running_var=running_var, mean=mean, inv_std=inv_std)
    check_shapes(z.shape, out=out)
    threads(n_threads)
    if z.shape[0] == 0:
        raise ValueError("z must have at least one row: batch statistics of an empty batch are undefined")
    dt = z.dtype
    n = z.shape[0]
    a = z + b
    mu = a.sum(axis=0, dtype=np.float64) / n
    var = ((a.astype(np.float64) - mu) ** 2).sum(axis=0) / n
    mean[...] = mu
    inv_std[...] = 1.0 / np.sqrt(var + eps)
    running_mean[...] = momentum * running_mean.astype(np.float64) + (1.0 - momentum) * mu
    running_var[...] = momentum * running_var.astype(np.float64) + (1.0 - momentum) * var
    xhat = (a - mean) * inv_std
    np.maximum(dt.type(0), gamma * xhat + beta, out=out)


def batchnorm_relu_eval(z, b, gamma, beta, running_mean, running_var, eps, out, n_threads=1):
    """Test-mode out = relu(gamma * (z + b - running_mean) * inv_std + beta) (out may be z)."""
    check_shapes(z.shape[1:], b=b, gamma=gamma, beta=beta, running_mean=running_mean,
                 running_var=running_var)
    check_shapes(z.shape, out=out)
    threads(n_threads)
    inv_std = (1.0 / np.sqrt(running_var.astype(np.float64) + eps)).astype(z.dtype)
    np.maximum(z.dtype.type(0), gamma * (((z + b) - running_mean) * inv_std) + beta, out=out)


def relu_batchnorm_backward(dout, out, z, b, gamma, mean, inv_std, dz, dgamma, dbeta, db,
                            n_threads=1):
    """Backward of batchnorm_relu_forward (ReLU mask, batchnorm backward, bias grad)."""
    check_shapes(dout.shape, out=out, z=z, dz=dz)
    check_shapes(dout.shape[1:], b=b, gamma=gamma, mean=mean, inv_std=inv_std, dgamma=dgamma,
                 dbeta=dbeta, db=db)
    threads(n_threads)
    if dout.shape[0] == 0:
        raise ValueError("dout must have at least one row")
    dt = dout.dtype
    nf = dt.type(dout.shape[0])
    g = np.where(out > 0, dout, dt.type(0))
    xhat = ((z + b) - mean) * inv_std
    dbeta[...] = g.sum(axis=0, dtype=np.float64)
    dgamma[...] = (g * xhat).sum(axis=0, dtype=np.float64)
    c = gamma * inv_std / nf
    dz[...] = c * ((nf * g - dbeta) - xhat * dgamma)
    db[...] = dz.sum(axis=0, dtype=np.float64)


def _check_softmax(scores, y, dscores, n_threads):
    """The checks of the softmax kernels (sizes, threads, a non-empty batch, the labels)."""
    n, c = scores.shape
    check_shapes((n,), y=y)
    check_shapes(scores.shape, dscores=dscores)
    threads(n_threads)
    _check_scores(n, c)
    _check_labels(y, c)
    return n, c


def _check_scores(n, c):
    if n == 0:
        raise ValueError("scores must have at least one row: the mean loss of no samples is undefined")
    if c == 0:
        raise ValueError("scores must have at least one class column")


def softmax_loss_grad(scores, y, dscores, n_threads=1):
    """Mean softmax cross-entropy; writes its gradient into dscores (which may be scores)."""
    n, c = _check_softmax(scores, y, dscores, n_threads)
    dt = scores.dtype
    rows = np.arange(n)
    m = scores.max(axis=1, keepdims=True)
    sy = scores[rows, y] - m[:, 0]
    e = np.exp(scores - m)
    total = e.sum(axis=1, dtype=np.float64)
    inv_n = dt.type(1.0 / n)
    scale = (1.0 / total).astype(dt) * inv_n
    np.multiply(e, scale[:, None], out=dscores)
    dscores[rows, y] -= inv_n
    return float((np.log(total) - sy.astype(np.float64)).sum() / n)


def bias_softmax_loss_grad(scores, b, y, dscores, db, n_threads=1):
    """scores += b; softmax_loss_grad(scores, y, dscores); bias_grad(dscores, db); returns the loss.
    Labels are checked before anything is written."""
    check_shapes(scores.shape[1:], b=b, db=db)
    _check_softmax(scores, y, dscores, n_threads)
    np.add(scores, b, out=scores)
    loss = softmax_loss_grad(scores, y, dscores)
    bias_grad(dscores, db)
    return loss


def bias_softmax_soft_loss_grad(scores, b, targets, dscores, db, n_threads=1):
    """scores += b; loss_i = sum(t) log Z - sum_j t_j (s_j - m) (= -sum_j t_j log softmax(s)_j);
    dscores = (softmax(s) - t) / N; bias_grad(dscores, db); returns mean(loss_i)."""
    check_shapes(scores.shape[1:], b=b, db=db)
    check_shapes(scores.shape, targets=targets, dscores=dscores)
    threads(n_threads)
    n, c = scores.shape
    _check_scores(n, c)
    dt = scores.dtype
    np.add(scores, b, out=scores)
    m = scores.max(axis=1, keepdims=True)
    t64 = targets.astype(np.float64)
    dot = (t64 * (scores - m).astype(np.float64)).sum(axis=1)
    e = np.exp(scores - m)
    total = e.sum(axis=1, dtype=np.float64)
    inv_n = dt.type(1.0 / n)
    scale = (1.0 / total).astype(dt) * inv_n
    np.multiply(e, scale[:, None], out=dscores)
    dscores -= targets * inv_n
    bias_grad(dscores, db)
    return float((t64.sum(axis=1) * np.log(total) - dot).sum() / n)


STREAM_BLOCK, STREAM_CHUNK = 16384, 512


def stream_loop(src, dst, n_reads, n_writes, n_threads=1):
    """dst[w] = sum_r src[r] for every w; returns the kernel's checksum (lane sums per fixed block,
    in the kernel's order)."""
    if n_reads < 0 or n_writes < 0:
        raise ValueError(f"n_reads and n_writes must be >= 0, got {n_reads} and {n_writes}")
    length = src.shape[1]
    check_shapes((n_reads, length), src=src)
    check_shapes((n_writes, length), dst=dst)
    threads(n_threads)
    if length == 0 or (n_reads == 0 and n_writes == 0):
        return 0.0
    acc = src[0].copy() if n_reads else np.zeros(length, src.dtype)
    for r in range(1, n_reads):
        acc += src[r]
    dst[...] = acc
    total = 0.0
    for i0 in range(0, length, STREAM_BLOCK):
        block = acc[i0:i0 + STREAM_BLOCK]
        pad = np.zeros(-block.size % STREAM_CHUNK, src.dtype)
        lanes = np.concatenate([block, pad]).reshape(-1, STREAM_CHUNK).sum(axis=0, dtype=src.dtype)
        block_total = 0.0
        for v in lanes.tolist():          # in lane order, as the kernel adds them
            block_total += v
        total += block_total
    return total
