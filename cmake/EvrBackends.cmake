# Probe the backends this platform offers and pick the ones to build.
# Sets EVR_BUILT_BACKENDS (best first), EVR_HAVE_<B>, EVR_KQUEUE_EMULATED,
# EVR_BACKEND_LIBS, EVR_BACKEND_INCLUDES, EVR_BACKEND_PC_REQUIRES.
include(CheckIncludeFile)
include(CheckSymbolExists)
include(CheckCSourceCompiles)

check_symbol_exists(epoll_create1 "sys/epoll.h" EVR_FOUND_EPOLL)
check_symbol_exists(poll "poll.h" EVR_FOUND_POLL)
check_symbol_exists(kqueue "sys/types.h;sys/event.h;sys/time.h" EVR_FOUND_KQUEUE_NATIVE)

set(EVR_KQUEUE_EMULATED 0)
set(EVR_BACKEND_LIBS "")
set(EVR_BACKEND_INCLUDES "")
set(EVR_BACKEND_PC_REQUIRES "")
set(EVR_FOUND_KQUEUE ${EVR_FOUND_KQUEUE_NATIVE})
# EVR_PORTABLE: epoll is Linux-only; leave it out so that poll (and kqueue
# under libkqueue) are what a Linux build runs.
set(EVR_OFFERS_EPOLL ${EVR_FOUND_EPOLL})
if(EVR_PORTABLE)
  set(EVR_OFFERS_EPOLL OFF)
endif()
if(NOT EVR_FOUND_KQUEUE_NATIVE)
  # On Linux a user-space kqueue (libkqueue) lets the kqueue backend and its
  # tests run here too. It is never the default backend.
  find_package(PkgConfig QUIET)
  if(PKG_CONFIG_FOUND)
    pkg_check_modules(LIBKQUEUE QUIET libkqueue)
    if(LIBKQUEUE_FOUND)
      set(EVR_FOUND_KQUEUE ON)
      set(EVR_KQUEUE_EMULATED 1)
    endif()
  endif()
endif()

# io_uring (Linux): when pkg-config finds liburing and a program using what
# backends/io_uring.c uses links with it under the current compiler and
# flags (a -m32 or musl-gcc build finds no usable liburing and simply
# leaves io_uring out). Left out of a portable build, as epoll is.
set(EVR_FOUND_IO_URING OFF)
if(NOT EVR_PORTABLE AND EVR_FOUND_EPOLL)
  find_package(PkgConfig QUIET)
  if(PKG_CONFIG_FOUND)
    pkg_check_modules(LIBURING QUIET liburing)
    if(LIBURING_FOUND)
      set(CMAKE_REQUIRED_INCLUDES ${LIBURING_INCLUDE_DIRS})
      set(CMAKE_REQUIRED_LIBRARIES ${LIBURING_LINK_LIBRARIES})
      set(CMAKE_REQUIRED_DEFINITIONS -D_GNU_SOURCE)
      check_c_source_compiles([=[
#include <liburing.h>
#include <poll.h>
int main(void) {
  struct io_uring r;
  struct io_uring_params p = {0};
  struct io_uring_cqe *c;
  struct __kernel_timespec ts = {0, 0};
  p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_R_DISABLED;
  if (io_uring_queue_init_params(8, &r, &p)) return 1;
  struct io_uring_probe *pr = io_uring_get_probe_ring(&r);
  if (pr) io_uring_free_probe(pr);
  struct io_uring_sqe *s = io_uring_get_sqe(&r);
  io_uring_prep_poll_multishot(s, 0, POLLIN);
  io_uring_sqe_set_data64(s, 1);
  s = io_uring_get_sqe(&r);
  io_uring_prep_poll_update(s, 1, 0, POLLIN, IORING_POLL_UPDATE_EVENTS | IORING_POLL_ADD_MULTI);
  io_uring_prep_poll_remove(s, 1);
  (void)io_uring_register(r.ring_fd, IORING_REGISTER_ENABLE_RINGS, 0, 0);
  (void)io_uring_submit_and_get_events(&r);
  (void)io_uring_submit_and_wait_timeout(&r, &c, 1, &ts, 0);
  io_uring_queue_exit(&r);
  return 0;
}]=] EVR_LIBURING_LINKS)
      unset(CMAKE_REQUIRED_INCLUDES)
      unset(CMAKE_REQUIRED_LIBRARIES)
      unset(CMAKE_REQUIRED_DEFINITIONS)
      if(EVR_LIBURING_LINKS)
        set(EVR_FOUND_IO_URING ON)
      endif()
    endif()
  endif()
endif()

set(_candidates "")
foreach(b epoll io_uring kqueue poll)
  string(TOUPPER ${b} B)
  if(b STREQUAL "epoll")
    set(_found ${EVR_OFFERS_EPOLL})
  else()
    set(_found ${EVR_FOUND_${B}})
  endif()
  if(_found)
    list(APPEND _candidates ${b})
  endif()
endforeach()

if(EVR_BACKENDS)
  foreach(b IN LISTS EVR_BACKENDS)
    if(NOT b IN_LIST _candidates)
      if(b STREQUAL "epoll" AND EVR_PORTABLE AND EVR_FOUND_EPOLL)
        message(FATAL_ERROR "EVR_BACKENDS names 'epoll', which EVR_PORTABLE=ON leaves out (available: ${_candidates})")
      endif()
      message(FATAL_ERROR "EVR_BACKENDS names '${b}', which this platform does not offer (found: ${_candidates})")
    endif()
  endforeach()
  set(EVR_BUILT_BACKENDS "")
  foreach(b IN LISTS _candidates)
    if(b IN_LIST EVR_BACKENDS)
      list(APPEND EVR_BUILT_BACKENDS ${b})
    endif()
  endforeach()
else()
  set(EVR_BUILT_BACKENDS ${_candidates})
endif()
if(NOT EVR_BUILT_BACKENDS)
  message(FATAL_ERROR "evr: no backend available")
endif()

foreach(b epoll io_uring kqueue poll)
  string(TOUPPER ${b} B)
  if(b IN_LIST EVR_BUILT_BACKENDS)
    set(EVR_HAVE_${B} 1)
  else()
    set(EVR_HAVE_${B} 0)
  endif()
endforeach()

if(EVR_HAVE_IO_URING)
  list(APPEND EVR_BACKEND_LIBS ${LIBURING_LINK_LIBRARIES})
  list(APPEND EVR_BACKEND_INCLUDES ${LIBURING_INCLUDE_DIRS})
  list(APPEND EVR_BACKEND_PC_REQUIRES liburing)
endif()
if(EVR_HAVE_KQUEUE AND EVR_KQUEUE_EMULATED)
  list(APPEND EVR_BACKEND_LIBS ${LIBKQUEUE_LINK_LIBRARIES})
  list(APPEND EVR_BACKEND_INCLUDES ${LIBKQUEUE_INCLUDE_DIRS})
  list(APPEND EVR_BACKEND_PC_REQUIRES libkqueue)
endif()
