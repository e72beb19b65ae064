# C layout of the reclaimer when the set-up compiles reclaim.py (see pager.pxd), and
# its calls on every request as C calls.

cdef class Reclaimer:
    cdef public object space
    cdef public object counters
    cdef public Py_ssize_t epoch
    cdef public dict readers
    cdef public object deferred
    cdef public object _changed

    cpdef free_runs(self, runs, bint now=*)
    cpdef _free_now(self, list runs)
    cpdef changed(self)
    cpdef Py_ssize_t pin(self)
    cpdef unpin(self, Py_ssize_t epoch)
