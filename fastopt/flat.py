"""Flat parameter storage: every parameter of a model is a view into one contiguous buffer per dtype.

Why: an optimizer step over a model stored this way is ONE kernel call over the whole buffer
(PyTorch's ``fused=True`` path plays the same role) instead of one call, one validation and one
dispatch per parameter; a 3072-1024-1024-10 MLP has 10 parameters, a deeper model has hundreds.

Adopting it in your own NumPy model (once, at construction)::

    flat = FlatParams(model.params)          # dict name -> array; values are copied in once
    model.params = flat.params               # rebind: from now on every parameter is a view
    grads = flat.grads                       # views of one zeroed gradient buffer, same names

Afterwards update IN PLACE only: write gradients with ``out=`` / ``[...] =`` into ``grads[name]``
(``np.matmul(x.T, dout, out=grads["W1"])``, ``grads["b1"][...] = dout.sum(0)``) and never rebind
``params[name] = new_array`` -- a rebound name is no longer part of the buffer, and an optimizer that
steps the buffer would silently skip it. ``tiles_one_buffer`` lets an optimizer check that cheaply.

The layout: parameters of one dtype follow each other in the order given, with no gaps, so that
``FlatParams.buffer(dtype)`` is exactly the concatenation of their ravelled values.
"""
from collections.abc import Mapping

import numpy as np

from ._validation import FLOAT_DTYPES, _describe

__all__ = ["FlatParams", "FlatArrays", "tiles_one_buffer"]


class FlatArrays(Mapping):
    """Mapping name -> C-contiguous view into one 1-D buffer per dtype.

    Names cannot be rebound: ``flat[name] = value`` COPIES value into the existing view (so code
    like CS231n's Solver, ``model.params[p] = next_w``, keeps working and the buffer stays whole);
    the shape must match, the dtype may be cast within float kinds. No names are added or removed.
    """

    def __init__(self, buffers, layout):
        self._buffers = buffers          # dtype -> 1-D C-contiguous ndarray
        self._layout = layout            # [(name, dtype, offset, shape)] in the order given
        self._views = {name: buffers[dt][off:off + _size(shape)].reshape(shape)
                       for name, dt, off, shape in layout}

    def __reduce__(self):
        # Pickle the buffers once and rebuild the views on load: pickling the views themselves
        # would store copies that no longer share the buffer.
        return (FlatArrays, (self._buffers, self._layout))

    def __getitem__(self, name):
        return self._views[name]

    # Mapping's get and `in` go through __getitem__ and a KeyError: an optimizer step looks up
    # every name, so these are the dict's own.
    def get(self, name, default=None):
        return self._views.get(name, default)

    def __contains__(self, name):
        return name in self._views

    def __setitem__(self, name, value):
        if name not in self._views:
            raise KeyError(f"{name!r} is not one of the flat arrays {list(self._views)}; "
                           f"the layout is fixed when FlatParams is built")
        view = self._views[name]
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "fiu":
            raise TypeError(f"{name} must be assigned a real NumPy array of shape {view.shape}, "
                            f"got {_describe(value)}")
        if value.shape != view.shape:
            raise ValueError(f"{name} has shape {view.shape} (a view of a flat buffer); "
                             f"cannot assign an array of shape {value.shape}")
        if value is not view:
            np.copyto(view, value, casting="same_kind" if value.dtype.kind == "f" else "unsafe")

    def __iter__(self):
        return iter(self._views)

    def __len__(self):
        return len(self._views)

    def __repr__(self):
        sizes = ", ".join(f"{dt}: {buf.size}" for dt, buf in self._buffers.items())
        return f"FlatArrays({list(self._views)}, buffers {{{sizes}}})"

    @property
    def buffers(self):
        """dict dtype -> the 1-D buffer that the views of that dtype tile, in order."""
        return dict(self._buffers)

    def buffer(self, dtype):
        """The 1-D buffer holding every array of `dtype`."""
        dtype = np.dtype(dtype)
        if dtype not in self._buffers:
            raise KeyError(f"no array of dtype {dtype} here; dtypes present: {[str(d) for d in self._buffers]}")
        return self._buffers[dtype]

    def zero_(self):
        """Set every array to zero (one fill per buffer)."""
        for buf in self._buffers.values():
            buf.fill(0)


def _size(shape):
    return int(np.prod(shape, dtype=np.int64))


def _layout(entries):
    """[(name, dtype, shape)] -> ([(name, dtype, offset, shape)] in that order, {dtype: total size})."""
    layout, totals = [], {}
    for name, dtype, shape in entries:
        offset = totals.get(dtype, 0)
        layout.append((name, dtype, offset, shape))
        totals[dtype] = offset + _size(shape)
    return layout, totals


def _allocate(layout, totals, fill):
    buffers = {dt: np.empty(n, dtype=dt) if fill is None else np.full(n, fill, dtype=dt)
               for dt, n in totals.items()}
    return FlatArrays(buffers, layout)


class FlatParams:
    """Parameters, gradients and (on request) optimizer state in one contiguous buffer per dtype.

    ``FlatParams(arrays, dtype=None)``: `arrays` is a dict name -> ndarray (or a sequence of
    ndarrays, named "0", "1", ...). Each array must be float32 or float64; its values are copied
    into the buffer once (the originals are left untouched and no longer used). With `dtype` given
    every parameter is stored in that dtype (one buffer); otherwise each keeps its own dtype.

    Attributes: ``params`` and ``grads`` (FlatArrays: name -> view), ``names``.
    """

    def __init__(self, arrays, dtype=None):
        items = self._check(arrays, dtype)
        target = None if dtype is None else np.dtype(dtype)
        self._layout, self._totals = _layout(
            (name, a.dtype if target is None else target, a.shape) for name, a in items)
        self.params = _allocate(self._layout, self._totals, None)
        for name, a in items:
            self.params[name][...] = a          # casts when `dtype` was given
        self.grads = self.zeros_like_flat()
        self.names = tuple(name for name, _ in items)

    @staticmethod
    def _check(arrays, dtype):
        if dtype is not None:
            try:
                dt = np.dtype(dtype)
            except TypeError:
                raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
            if dt not in FLOAT_DTYPES:
                raise TypeError(f"dtype must be float32 or float64, got {dt}")
        if isinstance(arrays, Mapping):
            items = list(arrays.items())
        elif isinstance(arrays, (list, tuple)):
            items = [(str(i), a) for i, a in enumerate(arrays)]
        else:
            raise TypeError(f"arrays must be a dict name -> ndarray or a list of ndarrays, "
                            f"got {_describe(arrays)}")
        if not items:
            raise ValueError("arrays must hold at least one parameter, got none")
        seen = {}
        for name, a in items:
            if not isinstance(name, str) or not name:
                raise TypeError(f"parameter names must be non-empty str, got {name!r}")
            if not isinstance(a, np.ndarray):
                raise TypeError(f"parameter {name!r} must be a NumPy array of float32 or float64, "
                                f"got {_describe(a)}")
            if a.dtype not in FLOAT_DTYPES:
                raise TypeError(f"parameter {name!r} must have dtype float32 or float64, got {a.dtype}")
            # The same array under two names would become two independent copies: refuse.
            other = seen.get(id(a))
            if other is not None:
                raise ValueError(f"parameter {name!r} is the same array as {other!r}; "
                                 f"each parameter may be given once")
            seen[id(a)] = name
        return items

    def zeros_like_flat(self, fill=0):
        """A new FlatArrays with the params' layout (same names, shapes, dtypes), filled with `fill`.

        Use it for optimizer state (exp_avg, exp_avg_sq, momentum buffers): state laid out like the
        params lets one kernel call update everything.
        """
        return _allocate(self._layout, self._totals, fill)

    def __repr__(self):
        return f"FlatParams({list(self.names)}, dtypes {[str(d) for d in self._totals]})"


def _address(a):
    return a.__array_interface__["data"][0]


def tiles_one_buffer(arrays):
    """The 1-D view of the memory that `arrays` tile in order, or None.

    Positive when every array is a C-contiguous ndarray of one float dtype, all are views of the
    same C-contiguous base array, and each one starts exactly where the previous one ends (no gap,
    no overlap, the given order). The result then covers exactly those arrays' elements, so an
    elementwise kernel run once on it does what a loop over the arrays would do. Cost:
    O(len(arrays)), no data is read. A group that is a contiguous run inside a bigger buffer is
    also positive. The base may hold another dtype than the arrays: optimizer state is placed in a
    raw uint8 buffer and viewed as floats (fastopt.optim._base.placed_array), and it must tile too.
    The result is read-only unless every array is writeable.
    """
    if not isinstance(arrays, (list, tuple)) or not arrays:
        return None
    first = arrays[0]
    if not isinstance(first, np.ndarray):
        return None
    base, dtype = first.base, first.dtype
    if not isinstance(base, np.ndarray) or dtype not in FLOAT_DTYPES or not base.flags.c_contiguous:
        return None
    start = _address(first)
    end = start
    writeable = True
    for a in arrays:
        if (not isinstance(a, np.ndarray) or a.base is not base or a.dtype != dtype
                or not a.flags.c_contiguous or _address(a) != end):
            return None
        end += a.nbytes
        writeable = writeable and a.flags.writeable
    lo = start - _address(base)
    hi = end - _address(base)
    if lo < 0 or hi > base.nbytes:
        return None
    raw = base.reshape(-1).view(np.uint8)    # views: base is C-contiguous
    span = raw[lo:hi].view(dtype)
    if not writeable:
        span.flags.writeable = False
    return span
