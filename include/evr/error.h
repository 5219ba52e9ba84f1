/** @file evr/error.h
 *  Error codes.
 *
 * Every evr function that returns int returns 0 (or a count) on success and a
 * negative EVR_E* code on failure. On POSIX systems EVR_E<NAME> == -E<NAME>, so
 * a code can be compared with -errno values directly. Codes outside errno's
 * range (EVR_EOF, the resolver block) are defined below the system ones.
 * A function may also pass on an error of the system that is not in the
 * list (a negative errno value); evr_strerror() and evr_err_name() then
 * say "unknown error" and "UNKNOWN".
 */
#ifndef EVR_ERROR_H
#define EVR_ERROR_H

#include <errno.h>
#include "evr/version.h"

/** The list of evr's error codes: X(name, value, message) for each, the one
 *  list behind #evr_errno_t and the tables of evr_strerror() and
 *  evr_err_name(). Each entry gives the code EVR_<name> (e.g. EVR_EAGAIN
 *  from X(EAGAIN, -EAGAIN, ...)). A program may expand it too, e.g. to
 *  build a switch over every code. */
#define EVR_ERRNO_MAP(X)                                                       \
  X(EPERM, -EPERM, "operation not permitted")                                  \
  X(ENOENT, -ENOENT, "no such file or directory")                              \
  X(EINTR, -EINTR, "interrupted system call")                                  \
  X(EIO, -EIO, "i/o error")                                                    \
  X(EBADF, -EBADF, "bad file descriptor")                                      \
  X(EAGAIN, -EAGAIN, "resource temporarily unavailable")                       \
  X(ENOMEM, -ENOMEM, "not enough memory")                                      \
  X(EACCES, -EACCES, "permission denied")                                      \
  X(EFAULT, -EFAULT, "bad address")                                            \
  X(EBUSY, -EBUSY, "resource busy")                                            \
  X(EEXIST, -EEXIST, "already exists")                                         \
  X(ENOTDIR, -ENOTDIR, "not a directory")                                      \
  X(EINVAL, -EINVAL, "invalid argument")                                       \
  X(ENFILE, -ENFILE, "file table overflow")                                    \
  X(EMFILE, -EMFILE, "too many open files")                                    \
  X(ENOSPC, -ENOSPC, "no space left on device")                                \
  X(EPIPE, -EPIPE, "broken pipe")                                              \
  X(ERANGE, -ERANGE, "result out of range")                                    \
  X(ENAMETOOLONG, -ENAMETOOLONG, "name too long")                              \
  X(ENOSYS, -ENOSYS, "function not implemented")                               \
  X(ENOTSOCK, -ENOTSOCK, "socket operation on non-socket")                     \
  X(EPROTONOSUPPORT, -EPROTONOSUPPORT, "protocol not supported")               \
  X(ENOTSUP, -ENOTSUP, "operation not supported")                              \
  X(EAFNOSUPPORT, -EAFNOSUPPORT, "address family not supported")               \
  X(EADDRINUSE, -EADDRINUSE, "address already in use")                         \
  X(EADDRNOTAVAIL, -EADDRNOTAVAIL, "address not available")                    \
  X(ENETDOWN, -ENETDOWN, "network is down")                                    \
  X(ENETUNREACH, -ENETUNREACH, "network is unreachable")                       \
  X(ECONNABORTED, -ECONNABORTED, "software caused connection abort")           \
  X(ECONNRESET, -ECONNRESET, "connection reset by peer")                       \
  X(ENOBUFS, -ENOBUFS, "no buffer space available")                            \
  X(EISCONN, -EISCONN, "socket is already connected")                          \
  X(ENOTCONN, -ENOTCONN, "socket is not connected")                            \
  X(ETIMEDOUT, -ETIMEDOUT, "connection timed out")                             \
  X(ECONNREFUSED, -ECONNREFUSED, "connection refused")                         \
  X(EHOSTUNREACH, -EHOSTUNREACH, "host is unreachable")                        \
  X(EALREADY, -EALREADY, "operation already in progress")                      \
  X(EINPROGRESS, -EINPROGRESS, "operation in progress")                        \
  X(ECANCELED, -ECANCELED, "operation canceled")                               \
  X(EOVERFLOW, -EOVERFLOW, "value too large")                                  \
  X(EPROTO, -EPROTO, "protocol error")                                         \
  /* evr's own codes, outside errno's range */                                 \
  X(EOF, -4095, "end of file")                                                 \
  X(ETLS, -4094, "TLS error")                                                  \
  X(EAI_NONAME, -3008, "unknown node or service")                              \
  X(EAI_AGAIN, -3001, "temporary failure in name resolution")                  \
  X(EAI_FAIL, -3007, "permanent failure in name resolution")                   \
  X(EAI_FAMILY, -3006, "address family not supported by resolver")             \
  X(EAI_SERVICE, -3010, "service not available for socket type")               \
  X(EAI_MEMORY, -3002, "resolver out of memory")

/** evr's error codes: one enumerator EVR_<name> = value for each entry of
 *  EVR_ERRNO_MAP. For example EVR_EINVAL == -EINVAL and EVR_EOF == -4095.
 *  Functions return them as int. The codes of evr's own, outside errno's range:
 *  - EVR_EOF: end of file (a stream's peer half-closed);
 *  - EVR_ETLS: a TLS protocol or certificate verification error
 *    (evr/tls.h: evr_tls_reason() gives the reason);
 *  - EVR_EAI_NONAME, EVR_EAI_AGAIN, EVR_EAI_FAIL, EVR_EAI_FAMILY,
 *    EVR_EAI_SERVICE, EVR_EAI_MEMORY: name resolution failed, as
 *    getaddrinfo()'s EAI_* codes of the same names. */
typedef enum evr_errno {
#define EVR__ERR_ENUM(name, value, msg) EVR_##name = (value),
  EVR_ERRNO_MAP(EVR__ERR_ENUM)
#undef EVR__ERR_ENUM
  EVR__ERRNO_MAX = -4096
} evr_errno_t;

/** Human-readable message for an evr error code. Thread-safe.
 *  @param rc  a return value of an evr function or a callback's status.
 *  @return the message of EVR_ERRNO_MAP, "success" for 0, or "unknown
 *          error" for any other value; a static string, never NULL. */
EVR_API const char *evr_strerror(int rc);

/** The code's symbolic name. Thread-safe.
 *  @param rc  a return value of an evr function or a callback's status.
 *  @return the name without its EVR_ prefix, e.g. "EAGAIN" for EVR_EAGAIN;
 *          "OK" for 0, "UNKNOWN" for any other value; a static string,
 *          never NULL. */
EVR_API const char *evr_err_name(int rc);

#endif
