# Probe the system calls and flags evr has fast paths for, once, into
# EVR_HAVE_<X> (0 or 1) for cmake/evr_config.h.in. The code tests these
# macros, never the operating system's name.
#
# EVR_PORTABLE forces the Linux-only fast paths to 0, so that a Linux build
# compiles and runs the code the BSDs and macOS run. Probes that name no fast
# path (SO_NOSIGPIPE, issetugid, secure_getenv) are left as found.
include(CheckSymbolExists)

function(evr_probe var symbol headers)
  set(CMAKE_REQUIRED_DEFINITIONS -D_GNU_SOURCE -D_DEFAULT_SOURCE)
  check_symbol_exists(${symbol} "${headers}" ${var}_FOUND)
  if(${var}_FOUND)
    set(${var} 1 PARENT_SCOPE)
  else()
    set(${var} 0 PARENT_SCOPE)
  endif()
endfunction()

# accept4(fd, addr, len, SOCK_NONBLOCK|SOCK_CLOEXEC): Linux, the BSDs.
evr_probe(EVR_HAVE_ACCEPT4 accept4 "sys/types.h;sys/socket.h")
# socket(family, type|SOCK_NONBLOCK|SOCK_CLOEXEC): Linux, the BSDs.
evr_probe(_evr_sock_nonblock SOCK_NONBLOCK "sys/types.h;sys/socket.h")
evr_probe(_evr_sock_cloexec SOCK_CLOEXEC "sys/types.h;sys/socket.h")
if(_evr_sock_nonblock AND _evr_sock_cloexec)
  set(EVR_HAVE_SOCK_FLAGS 1)
else()
  set(EVR_HAVE_SOCK_FLAGS 0)
endif()
# accept4 is only used with both flags.
if(NOT EVR_HAVE_SOCK_FLAGS)
  set(EVR_HAVE_ACCEPT4 0)
endif()
# eventfd(0, EFD_CLOEXEC|EFD_NONBLOCK): Linux (FreeBSD 13 too).
evr_probe(_evr_eventfd eventfd "sys/eventfd.h")
evr_probe(_evr_efd_flags EFD_CLOEXEC "sys/eventfd.h")
if(_evr_eventfd AND _evr_efd_flags)
  set(EVR_HAVE_EVENTFD 1)
else()
  set(EVR_HAVE_EVENTFD 0)
endif()
# pipe2(fds, O_CLOEXEC|O_NONBLOCK): Linux, the BSDs.
evr_probe(EVR_HAVE_PIPE2 pipe2 "fcntl.h;unistd.h")
# send(..., MSG_NOSIGNAL): Linux, the BSDs, recent macOS.
evr_probe(EVR_HAVE_MSG_NOSIGNAL MSG_NOSIGNAL "sys/types.h;sys/socket.h")
# recvmsg(..., MSG_CMSG_CLOEXEC): descriptors received close-on-exec at once
# (Linux, the BSDs; not macOS).
evr_probe(EVR_HAVE_MSG_CMSG_CLOEXEC MSG_CMSG_CLOEXEC "sys/types.h;sys/socket.h")
# setsockopt(SO_NOSIGPIPE): macOS, FreeBSD, NetBSD; not Linux.
evr_probe(EVR_HAVE_SO_NOSIGPIPE SO_NOSIGPIPE "sys/types.h;sys/socket.h")
# ppoll(fds, n, timespec, sigmask): the poll backend's wait in nanoseconds
# (Linux, the BSDs; not macOS). Without it: poll() in whole milliseconds.
evr_probe(EVR_HAVE_PPOLL ppoll "poll.h")
# The environment in setuid/setgid programs: secure_getenv (glibc, musl,
# FreeBSD 14), else issetugid (the BSDs, macOS, musl).
evr_probe(EVR_HAVE_SECURE_GETENV secure_getenv "stdlib.h")
evr_probe(EVR_HAVE_ISSETUGID issetugid "unistd.h")

if(EVR_PORTABLE)
  foreach(f ACCEPT4 SOCK_FLAGS EVENTFD PIPE2 MSG_NOSIGNAL MSG_CMSG_CLOEXEC PPOLL)
    set(EVR_HAVE_${f} 0)
  endforeach()
endif()

set(EVR_FEATURES "")
foreach(f ACCEPT4 SOCK_FLAGS EVENTFD PIPE2 MSG_NOSIGNAL MSG_CMSG_CLOEXEC PPOLL SO_NOSIGPIPE SECURE_GETENV ISSETUGID)
  if(EVR_HAVE_${f})
    string(TOLOWER ${f} _f)
    list(APPEND EVR_FEATURES ${_f})
  endif()
endforeach()
