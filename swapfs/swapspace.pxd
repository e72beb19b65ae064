# C layout of the device table when the set-up compiles swapspace.py (see pager.pxd):
# its counters as C integers, and the allocation calls of every write as C calls.
cimport cython

cdef class SwapSpace:
    cdef public list _devs
    cdef public list _firsts
    cdef public list _levels
    cdef public dict _level_hd
    cdef public Py_ssize_t swap_total
    cdef public Py_ssize_t swap_pager_avail
    cdef public Py_ssize_t swap_reserved
    cdef public Py_ssize_t bad
    cdef public Py_ssize_t overcommit
    cdef public int swap_pager_full
    cdef public int swap_pager_almost_full
    cdef public double _reserve_fail_last
    cdef public dict uid_reserved
    cdef public dict uid_limit
    cdef public double _rlimit_fail_last
    cdef public object discard_wakeup
    cdef public list _host_full

    @cython.locals(mpages=Py_ssize_t, n=Py_ssize_t, start=Py_ssize_t, i=Py_ssize_t,
                   ndev=Py_ssize_t, devs=list)
    cpdef getswapspace(self, Py_ssize_t npages, Py_ssize_t limit=*)
    cpdef freeswapspace(self, Py_ssize_t blk, Py_ssize_t npages)
    @cython.locals(i=Py_ssize_t)
    cpdef tuple lookup(self, Py_ssize_t blk)
    cpdef tuple _run(self, Py_ssize_t blk, Py_ssize_t npages)
    cpdef _sizecheck(self)
