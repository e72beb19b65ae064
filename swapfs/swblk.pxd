# C types for swblk when the set-up compiles it: the slot arithmetic of the hot paths
# on C integers and the object's fields at fixed offsets. Page indices and block
# numbers that may run past 2**63 stay Python ints. The plain-Python run reads none of
# this.
cimport cython

cdef long long _NPG, _NONE, _LCH, _UNI, _FRAG
cdef Py_ssize_t _PROBE_MAX

@cython.locals(i=cython.Py_ssize_t, k=cython.Py_ssize_t, n=cython.Py_ssize_t,
               slot=cython.longlong)
cdef list _seg_runs(object seg, long long slot)

cdef void _push(list out, object blk, object n)

@cython.locals(last=cython.Py_ssize_t)
cdef int _unfragment(object leaf, Py_ssize_t j, Py_ssize_t off, long long v) except -1

cdef bint _settle(object leaf, Py_ssize_t j, Py_ssize_t off, Py_ssize_t probe,
                  long long v) except -1


cdef class SwapMeta:
    cdef readonly dict _leaves
    cdef readonly object _lkeys
    cdef readonly dict _sums
    cdef object _swapped
    cdef object _runs

    @cython.locals(off=cython.Py_ssize_t)
    cdef object _fragment(self, object lk, object leaf, Py_ssize_t j, long long v)

    @cython.locals(j0=cython.Py_ssize_t, j1=cython.Py_ssize_t, j=cython.Py_ssize_t,
                   c=cython.longlong, lo=cython.Py_ssize_t, hi=cython.Py_ssize_t,
                   off=cython.Py_ssize_t)
    cpdef list _runs_in(self, list lkeys, first, end)

    @cython.locals(c=cython.longlong, i=cython.longlong, v=cython.longlong)
    cpdef lookup(self, pindex)

    @cython.locals(j=cython.Py_ssize_t, i=cython.Py_ssize_t, c=cython.longlong,
                   v=cython.longlong, old=cython.longlong, off=cython.Py_ssize_t)
    cpdef build(self, pindex, blk)

    @cython.locals(j=cython.Py_ssize_t, i=cython.Py_ssize_t, c=cython.longlong,
                   old=cython.longlong, off=cython.Py_ssize_t)
    cpdef pop(self, pindex)

    @cython.locals(i=cython.Py_ssize_t, c=cython.longlong, vk=cython.longlong,
                   cap=cython.Py_ssize_t, after=cython.Py_ssize_t, lo=cython.Py_ssize_t,
                   hi=cython.Py_ssize_t, off=cython.Py_ssize_t, got=cython.Py_ssize_t)
    cpdef Py_ssize_t contig_after(self, pindex) except -1

    @cython.locals(lo=cython.Py_ssize_t, hi=cython.Py_ssize_t, n=cython.Py_ssize_t,
                   j=cython.Py_ssize_t, c=cython.longlong, v=cython.longlong,
                   off=cython.Py_ssize_t, added=cython.Py_ssize_t,
                   nold=cython.Py_ssize_t)
    cpdef list build_run(self, pindex, first_blk, npages)

    @cython.locals(j0=cython.Py_ssize_t, j1=cython.Py_ssize_t, j=cython.Py_ssize_t,
                   c=cython.longlong, lo=cython.Py_ssize_t, hi=cython.Py_ssize_t,
                   off=cython.Py_ssize_t, removed=cython.Py_ssize_t,
                   nold=cython.Py_ssize_t)
    cpdef list free(self, pindex, npages)

    @cython.locals(j=cython.Py_ssize_t, c=cython.longlong, off=cython.Py_ssize_t)
    cpdef list free_all(self)
