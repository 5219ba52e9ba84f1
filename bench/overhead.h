/* bench/overhead.h: the interface between the loop-overhead driver
 * (overhead.c) and one event library (overhead_<lib>.c). Each
 * bench-overhead-<lib> binary links the driver with exactly one of them.
 */
#ifndef EVR_BENCH_OVERHEAD_H
#define EVR_BENCH_OVERHEAD_H

struct ovh_lib {
  const char *name;
  /* Create the loop and room for n read watchers. 0 or -1. */
  int (*init)(int n);
  /* (Re)arm watcher i for readability of fd: stop it if it is active, then
   * start it, as the classic benchmark does with event_del + event_add.
   * Its callback must call ovh_on_read(i). */
  void (*arm)(int i, int fd);
  /* One non-blocking loop iteration. */
  void (*run_nowait)(void);
  /* Stop every watcher and free the loop. */
  void (*fini)(int n);
};

extern const struct ovh_lib ovh_lib;

/* The work of one read callback: read a byte from pipe i and, while writes
 * remain, write a byte to pipe i + 1. */
void ovh_on_read(int i);

#endif
