# A cache of large freed array buffers, for the outputs of fastopt's layer functions.
#
# Why: a training loop allocates the same large outputs every step (a batchnorm's out and dx, an
# activation's result) and frees them a moment later. glibc returns such blocks to the kernel
# (always above 32 MiB, its largest mmap threshold; below, when the heap's top is trimmed), so a new
# one is fresh pages that the kernel zeroes on first touch. Measured on a Zen 5, one thread
# (benchmarks/output_cache.py): float64 batchnorm fwd+bwd at 1024x4096, 1056 page faults per call
# and 19.7 ms, against 14.6 ms with the outputs from here. Blocks kept here come back without faults.
#
# How: a NumPy memory handler (NEP 49). fastopt.layers._operands.output allocates outputs of 32 MiB
# and more through it (why that size: its CACHED_OUTPUT_BYTES); every array remembers the handler
# that allocated it and frees its data through it, so a block returns here when its last array
# dies, wherever that is. Arrays made this way are ordinary arrays that own their data. Nothing
# else in the process uses this handler.
#
# Blocks start 64 bytes into their allocation (a header holds the capacity), so their data is
# 64-byte aligned: a 512-bit load of an aligned row then touches one cache line, not two.
# The cache holds at most FO_SLOTS blocks and `limit` bytes; a free that does not fit evicts the
# oldest blocks first (the newest are the likeliest to be asked for again). All state is behind
# one lock: the handler's functions may run on any thread, with or without the GIL; a child made by
# fork() gets a new lock (the old one may be held by a thread the child does not have).
from cpython.pycapsule cimport PyCapsule_New

import contextlib
import os

import numpy as np

cimport numpy as cnp

cnp.import_array()

cdef extern from "numpy/arrayobject.h":
    object PyDataMem_SetHandler(object handler)

cdef extern from *:
    """
    #include <stdlib.h>
    #include <string.h>
    #include "pythread.h"
    #if defined(__linux__)
    #include <sys/mman.h>
    #endif

    #define FO_HDR 64                     /* header bytes before the data: capacity, alignment */
    #define FO_SLOTS 16
    #define FO_HUGE ((size_t)4 << 20)     /* NumPy's own threshold for asking for huge pages */

    typedef struct { char *base; size_t cap; } fo_block;
    static fo_block fo_blocks[FO_SLOTS];  /* oldest first */
    static int fo_n = 0;
    static size_t fo_bytes = 0, fo_limit = (size_t)256 << 20, fo_hits = 0, fo_misses = 0;
    static PyThread_type_lock fo_lock = NULL;

    static int fo_init(void) {
        if (fo_lock == NULL) fo_lock = PyThread_allocate_lock();
        return fo_lock != NULL;
    }
    /* In a child made by fork() the lock may be held by a thread that no longer exists there:
       the child starts with a new one (the cached blocks are the child's copies, still valid). */
    static void fo_reinit_after_fork(void) {
        PyThread_type_lock fresh = PyThread_allocate_lock();
        if (fresh != NULL) fo_lock = fresh;
    }
    static int fo_try_acquire(void) { return PyThread_acquire_lock(fo_lock, NOWAIT_LOCK); }
    static void fo_acquire(void) { PyThread_acquire_lock(fo_lock, WAIT_LOCK); }
    static void fo_release(void) { PyThread_release_lock(fo_lock); }

    static char *fo_sys_alloc(size_t total) {
        void *p = NULL;
    #if defined(_WIN32)
        p = _aligned_malloc(total, 64);
    #else
        if (posix_memalign(&p, 64, total) != 0) p = NULL;
    #endif
    #if defined(__linux__) && defined(MADV_HUGEPAGE)
        if (p != NULL && total >= FO_HUGE) {   /* the whole pages inside the block, as NumPy does */
            size_t page = 4096, start = ((size_t)p + page - 1) & ~(page - 1);
            size_t end = ((size_t)p + total) & ~(page - 1);
            if (end > start) madvise((void *)start, end - start, MADV_HUGEPAGE);
        }
    #endif
        return (char *)p;
    }
    static void fo_sys_free(char *base) {
    #if defined(_WIN32)
        _aligned_free(base);
    #else
        free(base);
    #endif
    }
    static size_t fo_cap_of(void *p) { return *(size_t *)((char *)p - FO_HDR); }

    /* Drop the oldest blocks until `room` more bytes fit under the limit and a slot is free
       (caller holds the lock); the dropped blocks are returned in `out` for freeing outside it. */
    static int fo_evict(size_t room, char **out) {
        int k = 0, i;
        while (fo_n > 0 && (fo_n == FO_SLOTS || fo_bytes + room > fo_limit)) {
            out[k++] = fo_blocks[0].base;
            fo_bytes -= fo_blocks[0].cap;
            for (i = 1; i < fo_n; i++) fo_blocks[i - 1] = fo_blocks[i];
            fo_n--;
        }
        return k;
    }

    static void *fo_malloc(void *ctx, size_t size) {
        size_t need = ((size ? size : 1) + 63) & ~(size_t)63, waste = need / 8;
        int i, best = -1;
        char *base;
        (void)ctx;
        if (need < size || need > (size_t)-1 - FO_HDR) return NULL;
        fo_acquire();
        for (i = 0; i < fo_n; i++)     /* the smallest cached block that fits with < 1/8 to spare */
            if (fo_blocks[i].cap >= need && fo_blocks[i].cap - need <= waste
                    && (best < 0 || fo_blocks[i].cap < fo_blocks[best].cap))
                best = i;
        if (best >= 0) {
            base = fo_blocks[best].base;
            fo_bytes -= fo_blocks[best].cap;
            for (i = best + 1; i < fo_n; i++) fo_blocks[i - 1] = fo_blocks[i];
            fo_n--;
            fo_hits++;
            fo_release();
            return base + FO_HDR;
        }
        fo_misses++;
        fo_release();
        base = fo_sys_alloc(FO_HDR + need);
        if (base == NULL) return NULL;
        *(size_t *)base = need;
        return base + FO_HDR;
    }

    static void fo_free(void *ctx, void *p, size_t size) {
        char *dropped[FO_SLOTS + 1];
        int k = 0, i;
        size_t cap;
        (void)ctx; (void)size;
        if (p == NULL) return;
        cap = fo_cap_of(p);
        fo_acquire();
        if (cap <= fo_limit) {
            k = fo_evict(cap, dropped);
            fo_blocks[fo_n].base = (char *)p - FO_HDR;
            fo_blocks[fo_n].cap = cap;
            fo_n++;
            fo_bytes += cap;
        } else {
            dropped[k++] = (char *)p - FO_HDR;
        }
        fo_release();
        for (i = 0; i < k; i++) fo_sys_free(dropped[i]);
    }

    static void *fo_calloc(void *ctx, size_t nelem, size_t elsize) {
        void *p;
        if (elsize && nelem > (size_t)-1 / elsize) return NULL;
        p = fo_malloc(ctx, nelem * elsize);
        if (p != NULL) memset(p, 0, nelem * elsize);
        return p;
    }

    static void *fo_realloc(void *ctx, void *p, size_t size) {
        void *q;
        size_t cap;
        if (p == NULL) return fo_malloc(ctx, size);
        cap = fo_cap_of(p);
        if (size <= cap) return p;
        q = fo_malloc(ctx, size);
        if (q == NULL) return NULL;
        memcpy(q, p, cap);
        fo_free(ctx, p, cap);
        return q;
    }

    static PyDataMem_Handler fo_handler = {
        "fastopt_buffers", 1, {NULL, fo_malloc, fo_calloc, fo_realloc, fo_free}
    };

    static void fo_set_limit(size_t limit) {
        char *dropped[FO_SLOTS + 1];
        int k, i;
        fo_acquire();
        fo_limit = limit;
        k = fo_evict(0, dropped);
        fo_release();
        for (i = 0; i < k; i++) fo_sys_free(dropped[i]);
    }
    static void fo_stats(size_t *out) {
        fo_acquire();
        out[0] = fo_hits; out[1] = fo_misses; out[2] = (size_t)fo_n; out[3] = fo_bytes; out[4] = fo_limit;
        fo_release();
    }
    """
    ctypedef struct PyDataMem_Handler:
        pass
    PyDataMem_Handler fo_handler
    int fo_init()
    void fo_reinit_after_fork()
    int fo_try_acquire()
    void fo_release()
    void fo_set_limit(size_t limit)
    void fo_stats(size_t* out)

if not fo_init():
    raise MemoryError("fastopt._buffers: cannot allocate its lock")


def _after_fork_in_child():
    fo_reinit_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


@contextlib.contextmanager
def _holding_lock():
    """Tests only: hold the cache's lock, as another thread inside malloc or free would."""
    if not fo_try_acquire():
        raise RuntimeError("the buffer cache's lock is held")
    try:
        yield
    finally:
        fo_release()

# Lives as long as the module; every array allocated through it holds a reference too.
_HANDLER = PyCapsule_New(&fo_handler, "mem_handler", NULL)


def empty(shape, dtype):
    """np.empty(shape, dtype), its data from the block cache (C order)."""
    previous = PyDataMem_SetHandler(_HANDLER)
    try:
        return np.empty(shape, dtype)
    finally:
        PyDataMem_SetHandler(previous)


def set_limit(Py_ssize_t nbytes):
    """Keep at most `nbytes` of freed blocks (0 keeps none); blocks over it are freed now."""
    if nbytes < 0:
        raise ValueError(f"nbytes must be >= 0, got {nbytes}")
    fo_set_limit(<size_t>nbytes)


def stats():
    """{'hits', 'misses', 'blocks', 'bytes', 'limit'}: allocations served from the cache and not,
    the blocks and bytes held now, and the limit."""
    cdef size_t s[5]
    fo_stats(s)
    return {"hits": s[0], "misses": s[1], "blocks": s[2], "bytes": s[3], "limit": s[4]}
