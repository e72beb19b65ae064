# C layouts for the pager's classes when the set-up compiles pager.py: attributes
# kept in the object (no dictionary to search on every access). The plain-Python
# run reads none of this; a Python subclass still takes attributes of its own.

from swapfs.reclaim cimport Reclaimer

cdef class ObjectLock:
    cdef bint _held
    cdef object _waiters

cdef class Pager

cdef class SwapObject:
    cdef public Pager pager
    cdef public Py_ssize_t id
    cdef public object meta
    cdef public ObjectLock lock
    cdef public bint dead
    cdef public Py_ssize_t size
    cdef public Py_ssize_t resv
    cdef public Py_ssize_t gen
    cdef public object _ra
    cdef public Py_ssize_t _next_seq
    cdef public Py_ssize_t _advised
    cdef public Py_ssize_t last_write
    cdef public Py_ssize_t sync_errors
    cdef public object lost
    cdef public object uid

cdef class Pager:
    cdef public object space
    cdef public Py_ssize_t maxfilesize
    cdef public dict objects
    cdef public object counters
    cdef public object _write_limiter
    cdef public Reclaimer reclaim
    cdef public Py_ssize_t write_seq
    cdef public Py_ssize_t synced_seq
    cdef public dict _dirty
    cdef public object _round
    cdef public Py_ssize_t fdatasyncs
    cdef public bint checksums
    cdef public object readahead
    cdef public dict csum_errors
    cdef public object discard_returned

    cpdef Py_ssize_t pin(self)
    cpdef unpin(self, Py_ssize_t epoch)
    cpdef free_runs(self, runs, bint now=*)
    cpdef changed(self)
