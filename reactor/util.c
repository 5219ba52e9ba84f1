/* reactor/util.c: small descriptor helpers shared by backends and net/.
 * Each returns 0 or -errno taken right after the failing call. */
#include <fcntl.h>
#include "reactor/internal.h"

int evr__cloexec(int fd) {
  int flags = fcntl(fd, F_GETFD);
  if (flags < 0) return -errno;
  if (flags & FD_CLOEXEC) return 0;
  if (fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0) return -errno;
  return 0;
}

int evr__nonblock(int fd, int on) {
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0) return -errno;
  int want = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
  if (want == flags) return 0;
  if (fcntl(fd, F_SETFL, want) < 0) return -errno;
  return 0;
}
