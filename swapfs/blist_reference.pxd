# C types for the workload's loop when the set-up compiles this module, so that its
# PRNG, hash and counters run as the C baseline's do: unsigned 64-bit arithmetic, where
# the source's "& M" masks change nothing. The plain-Python run reads none of this.
cimport cython

@cython.locals(M=cython.ulonglong, P=cython.ulonglong, s=cython.ulonglong,
               h=cython.ulonglong, r1=cython.ulonglong, count=cython.ulonglong,
               i=cython.Py_ssize_t, failures=cython.Py_ssize_t, fixed=cython.bint,
               _=cython.Py_ssize_t, ops=cython.Py_ssize_t)
cpdef workload(impl, str variant, Py_ssize_t ops=*)
