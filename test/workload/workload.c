/* Ground-truth workload for cpost's accuracy tests: known CPU, memory and
 * disk work, built with gcc -static into the busybox test image.
 *
 *   cpost-workload cpu THREADS SECONDS    busy-loop THREADS threads, then print the CPU time
 *                                         and busy window (epoch seconds) they really got
 *   cpost-workload mem MIB SECONDS        touch MIB of anonymous memory, hold it
 *   cpost-workload io MIB FILE            O_DIRECT write then read MIB to FILE
 *   cpost-workload cache MIB FILE SECONDS write MIB to FILE once through the page cache
 *                                         (buffered, then fsync), then hold 1 MiB of
 *                                         anonymous memory for SECONDS: the cache is
 *                                         reclaimable, the need is ~1 MiB
 *   cpost-workload sleep-ms MS            sleep MS milliseconds
 *   cpost-workload spike MIB HOLD_MS PERIOD_MS SECONDS
 *                                         every PERIOD_MS for SECONDS: allocate and touch
 *                                         MIB, hold it HOLD_MS, free it (munmap)
 *   cpost-workload burst THREADS BUSY_MS PERIOD_MS SECONDS
 *                                         every PERIOD_MS (on an absolute schedule) each of
 *                                         THREADS threads does BUSY_MS of CPU time, then
 *                                         sleeps to the next period; work a CPU limit delays
 *                                         is carried (a late burst starts at once), as CFS
 *                                         bandwidth control carries it
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <unistd.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double busy_until;

static void *spin(void *arg) {
  (void)arg;
  volatile unsigned long x = 0;
  while (now_s() < busy_until) {
    for (int i = 0; i < 100000; i++) x += i;
  }
  return NULL;
}

/* Prints the CPU time the process really got over the busy window, so a
 * test knows the truth even when a loaded machine gives it less than a core
 * per thread. */
static int cpu(int threads, double seconds) {
  pthread_t t[256];
  struct timespec cpu0, cpu1;
  if (threads < 1 || threads > 256) return 2;
  struct timespec epoch0, epoch1;
  clock_gettime(CLOCK_REALTIME, &epoch0);
  double wall0 = now_s();
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu0);
  busy_until = wall0 + seconds;
  for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, spin, NULL);
  for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu1);
  double wall = now_s() - wall0;
  clock_gettime(CLOCK_REALTIME, &epoch1);
  double used = (cpu1.tv_sec - cpu0.tv_sec) + (cpu1.tv_nsec - cpu0.tv_nsec) / 1e9;
  printf("cpu_seconds=%.6f wall_seconds=%.6f start_epoch=%.6f end_epoch=%.6f\n", used, wall,
         epoch0.tv_sec + epoch0.tv_nsec / 1e9, epoch1.tv_sec + epoch1.tv_nsec / 1e9);
  fflush(stdout);
  return 0;
}

static int mem(long mib, double seconds) {
  size_t n = (size_t)mib << 20;
  char *p = malloc(n);
  if (!p) return 3;
  long page = sysconf(_SC_PAGESIZE);
  for (size_t i = 0; i < n; i += page) p[i] = (char)i | 1;
  struct timespec ts = {(time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9)};
  nanosleep(&ts, NULL);
  return p[page] == 0; /* keep p alive */
}

static int io(long mib, const char *file) {
  const size_t block = 1 << 20;
  void *buf;
  if (posix_memalign(&buf, 4096, block)) return 3;
  memset(buf, 0x5a, block);
  int fd = open(file, O_CREAT | O_TRUNC | O_WRONLY | O_DIRECT, 0644);
  if (fd < 0) { perror("open for write"); return 4; }
  for (long i = 0; i < mib; i++)
    if (write(fd, buf, block) != (ssize_t)block) { perror("write"); return 5; }
  fsync(fd);
  close(fd);
  fd = open(file, O_RDONLY | O_DIRECT);
  if (fd < 0) { perror("open for read"); return 4; }
  for (long i = 0; i < mib; i++)
    if (read(fd, buf, block) != (ssize_t)block) { perror("read"); return 5; }
  close(fd);
  unlink(file);
  return 0;
}

static int cache(long mib, const char *file, double seconds) {
  const size_t block = 1 << 20;
  char *buf = malloc(block);
  if (!buf) return 3;
  memset(buf, 0x5a, block);
  int fd = open(file, O_CREAT | O_TRUNC | O_WRONLY, 0644);
  if (fd < 0) { perror("open for write"); return 4; }
  for (long i = 0; i < mib; i++)
    if (write(fd, buf, block) != (ssize_t)block) { perror("write"); return 5; }
  fsync(fd);
  close(fd);
  struct timespec ts = {(time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9)};
  nanosleep(&ts, NULL);
  return buf[block - 1] != 0x5a; /* keep buf alive */
}

static int spike(long mib, long hold_ms, long period_ms, double seconds);
static int burst(int threads, long busy_ms, long period_ms, double seconds);

int main(int argc, char **argv) {
  if (argc >= 4 && strcmp(argv[1], "cpu") == 0) return cpu(atoi(argv[2]), atof(argv[3]));
  if (argc >= 4 && strcmp(argv[1], "mem") == 0) return mem(atol(argv[2]), atof(argv[3]));
  if (argc >= 4 && strcmp(argv[1], "io") == 0) return io(atol(argv[2]), argv[3]);
  if (argc >= 5 && strcmp(argv[1], "cache") == 0) return cache(atol(argv[2]), argv[3], atof(argv[4]));
  if (argc >= 3 && strcmp(argv[1], "sleep-ms") == 0) {
    long ms = atol(argv[2]);
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    return 0;
  }
  if (argc >= 6 && strcmp(argv[1], "spike") == 0) return spike(atol(argv[2]), atol(argv[3]), atol(argv[4]), atof(argv[5]));
  if (argc >= 6 && strcmp(argv[1], "burst") == 0) return burst(atoi(argv[2]), atol(argv[3]), atol(argv[4]), atof(argv[5]));
  fprintf(stderr, "usage: cpost-workload cpu THREADS SECONDS | mem MIB SECONDS | io MIB FILE | cache MIB FILE SECONDS | sleep-ms MS"
                  " | spike MIB HOLD_MS PERIOD_MS SECONDS | burst THREADS BUSY_MS PERIOD_MS SECONDS\n");
  return 2;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* mmap'd so free really returns the pages: the cgroup's usage drops after each hold */
static int spike(long mib, long hold_ms, long period_ms, double seconds) {
  size_t n = (size_t)mib << 20;
  long page = sysconf(_SC_PAGESIZE);
  long rounds = (long)(seconds * 1000 / period_ms);
  for (long r = 0; r < rounds; r++) {
    char *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return 3;
    for (size_t i = 0; i < n; i += page) p[i] = 1;
    sleep_ms(hold_ms);
    munmap(p, n);
    sleep_ms(period_ms - hold_ms);
  }
  printf("spikes=%ld mib=%ld hold_ms=%ld\n", rounds, mib, hold_ms);
  return 0;
}

/* burst: every thread runs the same absolute schedule of bursts of CPU time (not wall time) */
static struct { long busy_ns, period_ns, rounds; struct timespec start; } burst_plan;

static void *burst_thread(void *arg) {
  long *late = arg;
  volatile unsigned long x = 0;
  for (long r = 0; r < burst_plan.rounds; r++) {
    struct timespec at = burst_plan.start;
    long long ns = (long long)at.tv_nsec + (long long)r * burst_plan.period_ns;
    at.tv_sec += ns / 1000000000LL;
    at.tv_nsec = ns % 1000000000LL;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (now.tv_sec > at.tv_sec || (now.tv_sec == at.tv_sec && now.tv_nsec >= at.tv_nsec)) *late += r > 0;
    else clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &at, NULL);
    struct timespec c0, c;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
    do {
      for (int i = 0; i < 20000; i++) x += i;
      clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c);
    } while ((c.tv_sec - c0.tv_sec) * 1000000000L + (c.tv_nsec - c0.tv_nsec) < burst_plan.busy_ns);
  }
  return NULL;
}

static int burst(int threads, long busy_ms, long period_ms, double seconds) {
  pthread_t t[256];
  long late[256] = {0};
  if (threads < 1 || threads > 256 || busy_ms < 0 || period_ms < 1) return 2;
  burst_plan.busy_ns = busy_ms * 1000000L;
  burst_plan.period_ns = period_ms * 1000000L;
  burst_plan.rounds = (long)(seconds * 1000 / period_ms);
  clock_gettime(CLOCK_MONOTONIC, &burst_plan.start);
  double wall0 = now_s();
  struct timespec cpu0, cpu1;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu0);
  for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, burst_thread, &late[i]);
  long behind = 0;
  for (int i = 0; i < threads; i++) {
    pthread_join(t[i], NULL);
    behind += late[i];
  }
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu1);
  double used = (cpu1.tv_sec - cpu0.tv_sec) + (cpu1.tv_nsec - cpu0.tv_nsec) / 1e9;
  printf("bursts=%ld cpu_seconds=%.6f wall_seconds=%.6f late_bursts=%ld\n", burst_plan.rounds, used, now_s() - wall0, behind);
  fflush(stdout);
  return 0;
}
