# C layouts of the devices when the set-up compiles device.py (see pager.pxd), and
# the calls of every write as C calls. A Python subclass (nbddev.py, tests) still
# overrides any method.

cdef class Device:
    cdef public object path
    cdef public Py_ssize_t npages
    cdef public bint is_block
    cdef public object ident
    cdef public object down
    cdef public object on_down
    cdef public object faults

    cpdef _check(self, str what, Py_ssize_t page, Py_ssize_t npages)
    cpdef write_pages(self, Py_ssize_t page, data)
    cpdef _write_view(self, Py_ssize_t page, data)
    cpdef bint _quick_write(self, Py_ssize_t nbytes, limiter=*)
    cpdef bint _quick_read(self, Py_ssize_t nbytes)
    cpdef awrite_pages(self, Py_ssize_t page, data, limiter=*)

cdef class FileDevice(Device):
    cdef public int fd
    cdef public object st_dev
    cdef public object st_ino
    cdef public list _write_time
    cdef public double _read_time
    cdef public object _discard_lock

    cpdef bint _quick_write(self, Py_ssize_t nbytes, limiter=*)
    cpdef bint _quick_read(self, Py_ssize_t nbytes)

cdef class MemoryDevice(Device):
    cdef public object _buf
