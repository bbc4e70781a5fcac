/*
 * A test double of libnvidia-ml.so.1: the NVML symbols cpost binds, with the
 * real ABI (struct layouts, return codes and calling conventions of nvml.h,
 * checked against CUDA 12.6's nvml.h and nvml-wrapper-sys 0.7's bindings.rs),
 * answering what a script file says. The tests build it with
 * `gcc -shared -fPIC` (see double.ts) because no GPU exists on CI machines.
 *
 * The script is the file named by $FAKE_NVML_SCRIPT (default: script.txt
 * beside the library, for processes that load it in-process after start),
 * one fact a line, re-read
 * when it changes (checked at most every 5 ms), so a test can change the
 * scene mid-run (e.g. a GPU falls off the bus):
 *
 *   driver 550.54.15
 *   init_error 9                      nvmlInit_v2 answers this nvmlReturn_t
 *   sample_period_us 20000            period of the driver's sample buffers
 *   process_info_v3_size 32           R535's transient 32-byte nvmlProcessInfo_t
 *   device 0 name NVIDIA H100 80GB HBM3
 *   device 0 uuid GPU-...
 *   device 0 util 73 41               gpu %, memory %
 *   device 0 memory 85899345920 4294967296 536870912   total used reserved (bytes)
 *   device 0 power_mw 215500
 *   device 0 temp 61
 *   device 0 sm_clock 1980
 *   device 0 lost                     every call on it: NVML_ERROR_GPU_IS_LOST
 *   device 0 error nvmlDeviceGetPowerUsage 3
 *   process 0 4242 6442450944 35      device pid usedGpuMemory smUtil%
 *
 * On nvmlShutdown the number of calls per function is written to
 * $FAKE_NVML_STATS (default: stats.txt beside the library) as "name count" lines,
 * counted from the first nvmlInit_v2 of that session, so tests can check how cpost polls.
 *
 * Build flags emulate older drivers: -DOMIT_INIT_V2 (pre-R319: no
 * nvmlInit_v2), -DOMIT_MEMORY_V2, -DOMIT_PROCESSES_V2, -DOMIT_PROCESSES_V3,
 * -DOMIT_SAMPLES, -DOMIT_PROCESS_UTILIZATION.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

typedef int nvmlReturn_t;
typedef struct nvmlDevice_st *nvmlDevice_t;

enum {
  NVML_SUCCESS = 0, NVML_ERROR_UNINITIALIZED = 1, NVML_ERROR_INVALID_ARGUMENT = 2,
  NVML_ERROR_NOT_SUPPORTED = 3, NVML_ERROR_NOT_FOUND = 6, NVML_ERROR_INSUFFICIENT_SIZE = 7,
  NVML_ERROR_GPU_IS_LOST = 15, NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25, NVML_ERROR_UNKNOWN = 999,
};

typedef struct { unsigned int gpu; unsigned int memory; } nvmlUtilization_t;
typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
typedef struct { unsigned int version; unsigned long long total, reserved, free, used; } nvmlMemory_v2_t;
typedef struct { unsigned int pid; unsigned long long usedGpuMemory; } nvmlProcessInfo_v1_t;
typedef struct {
  unsigned int pid; unsigned long long usedGpuMemory; unsigned int gpuInstanceId, computeInstanceId;
} nvmlProcessInfo_v2_t;
/* What R535.54 wrote through nvmlDeviceGetComputeRunningProcesses_v3 (later nvmlProcessDetail_v1_t). */
typedef struct {
  unsigned int pid; unsigned long long usedGpuMemory; unsigned int gpuInstanceId, computeInstanceId;
  unsigned long long usedGpuCcProtectedMemory;
} nvmlProcessInfo_r535_t;
typedef union { double dVal; unsigned int uiVal; unsigned long ulVal; unsigned long long ullVal; long long sllVal; } nvmlValue_t;
typedef struct { unsigned long long timeStamp; nvmlValue_t sampleValue; } nvmlSample_t;
typedef struct {
  unsigned int pid; unsigned long long timeStamp; unsigned int smUtil, memUtil, encUtil, decUtil;
} nvmlProcessUtilizationSample_t;

_Static_assert(sizeof(nvmlUtilization_t) == 8, "nvmlUtilization_t");
_Static_assert(sizeof(nvmlMemory_t) == 24, "nvmlMemory_t");
_Static_assert(sizeof(nvmlMemory_v2_t) == 40, "nvmlMemory_v2_t");
_Static_assert(sizeof(nvmlProcessInfo_v1_t) == 16, "nvmlProcessInfo_v1_t");
_Static_assert(sizeof(nvmlProcessInfo_v2_t) == 24, "nvmlProcessInfo_v2_t");
_Static_assert(sizeof(nvmlProcessInfo_r535_t) == 32, "nvmlProcessInfo_r535_t");
_Static_assert(sizeof(nvmlSample_t) == 16, "nvmlSample_t");
_Static_assert(sizeof(nvmlProcessUtilizationSample_t) == 32, "nvmlProcessUtilizationSample_t");

#define NVML_MEMORY_V2_VERSION ((unsigned int)(sizeof(nvmlMemory_v2_t) | (2u << 24)))
#define MAX_DEVICES 8
#define MAX_PROCESSES 256
#define RING 120 /* samples the driver keeps per type */

/* Functions whose calls are counted and whose answers can be scripted as errors. */
#define FUNCTIONS(X) X(nvmlInit_v2) X(nvmlShutdown) X(nvmlDeviceGetCount_v2) X(nvmlDeviceGetHandleByIndex_v2) \
  X(nvmlDeviceGetName) X(nvmlDeviceGetUUID) X(nvmlDeviceGetUtilizationRates) X(nvmlDeviceGetMemoryInfo) \
  X(nvmlDeviceGetMemoryInfo_v2) X(nvmlDeviceGetPowerUsage) X(nvmlDeviceGetTemperature) X(nvmlDeviceGetClockInfo) \
  X(nvmlDeviceGetComputeRunningProcesses) X(nvmlDeviceGetComputeRunningProcesses_v2) \
  X(nvmlDeviceGetComputeRunningProcesses_v3) X(nvmlDeviceGetSamples) X(nvmlDeviceGetProcessUtilization) \
  X(nvmlSystemGetDriverVersion)
#define AS_ENUM(name) F_##name,
#define AS_NAME(name) #name,
enum { FUNCTIONS(AS_ENUM) F_COUNT };
static const char *function_names[] = { FUNCTIONS(AS_NAME) };

struct process { unsigned int pid; unsigned long long used; unsigned int sm; };
struct ring { unsigned long long last_us; int count, head; unsigned long long ts[RING]; unsigned int value[RING]; };

struct nvmlDevice_st {
  char name[96], uuid[96];
  unsigned int util_gpu, util_mem, power_mw, temp_c, sm_clock;
  unsigned long long mem_total, mem_used, mem_reserved;
  int lost;
  nvmlReturn_t error[F_COUNT];
  int processes;
  struct process process[MAX_PROCESSES];
  struct ring rings[7]; /* per nvmlSamplingType_t */
};

static struct nvmlDevice_st devices[MAX_DEVICES];
static int device_count, init_count, process_info_v3_size = 24;
static nvmlReturn_t init_error;
static unsigned long long sample_period_us = 20000;
static char driver_version[80] = "550.54.15";
static unsigned long long calls[F_COUNT];
static struct timespec script_mtime;
static ino_t script_ino;
static long long last_check_ns = -1000000000LL;

static long long monotonic_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* NVML timestamps are CPU time in microseconds since the epoch. */
__attribute__((unused)) static unsigned long long now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_REALTIME, &t);
  return (unsigned long long)t.tv_sec * 1000000ULL + (unsigned long long)t.tv_nsec / 1000ULL;
}

static int function_id(const char *name) {
  for (int i = 0; i < F_COUNT; i++) if (strcmp(function_names[i], name) == 0) return i;
  return -1;
}

static void parse_device_line(struct nvmlDevice_st *d, char *key, char *rest) {
  if (strcmp(key, "name") == 0) snprintf(d->name, sizeof d->name, "%s", rest);
  else if (strcmp(key, "uuid") == 0) snprintf(d->uuid, sizeof d->uuid, "%s", rest);
  else if (strcmp(key, "util") == 0) sscanf(rest, "%u %u", &d->util_gpu, &d->util_mem);
  else if (strcmp(key, "memory") == 0) sscanf(rest, "%llu %llu %llu", &d->mem_total, &d->mem_used, &d->mem_reserved);
  else if (strcmp(key, "power_mw") == 0) sscanf(rest, "%u", &d->power_mw);
  else if (strcmp(key, "temp") == 0) sscanf(rest, "%u", &d->temp_c);
  else if (strcmp(key, "sm_clock") == 0) sscanf(rest, "%u", &d->sm_clock);
  else if (strcmp(key, "lost") == 0) d->lost = 1;
  else if (strcmp(key, "error") == 0) {
    char fn[64];
    int code, id;
    if (sscanf(rest, "%63s %d", fn, &code) == 2 && (id = function_id(fn)) >= 0) d->error[id] = code;
  }
}

static void load_script(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) return;
  for (int i = 0; i < MAX_DEVICES; i++) {
    struct nvmlDevice_st *d = &devices[i];
    memset(d->name, 0, sizeof d->name + sizeof d->uuid);
    d->util_gpu = d->util_mem = d->power_mw = d->temp_c = d->sm_clock = 0;
    d->mem_total = d->mem_used = d->mem_reserved = 0;
    d->lost = d->processes = 0;
    memset(d->error, 0, sizeof d->error);
  }
  device_count = 0;
  init_error = NVML_SUCCESS;
  process_info_v3_size = 24;
  char line[512];
  while (fgets(line, sizeof line, f)) {
    line[strcspn(line, "\r\n")] = 0;
    char word[64], key[64];
    int index, used = 0;
    if (sscanf(line, "%63s %n", word, &used) != 1 || word[0] == '#') continue;
    char *rest = line + used;
    if (strcmp(word, "driver") == 0) snprintf(driver_version, sizeof driver_version, "%s", rest);
    else if (strcmp(word, "init_error") == 0) sscanf(rest, "%d", &init_error);
    else if (strcmp(word, "sample_period_us") == 0) sscanf(rest, "%llu", &sample_period_us);
    else if (strcmp(word, "process_info_v3_size") == 0) sscanf(rest, "%d", &process_info_v3_size);
    else if (strcmp(word, "device") == 0 && sscanf(rest, "%d %63s %n", &index, key, &used) >= 2 && index >= 0 &&
             index < MAX_DEVICES) {
      if (index + 1 > device_count) device_count = index + 1;
      parse_device_line(&devices[index], key, rest + used);
    } else if (strcmp(word, "process") == 0) {
      unsigned int pid, sm = 0;
      unsigned long long bytes;
      if (sscanf(rest, "%d %u %llu %u", &index, &pid, &bytes, &sm) >= 3 && index >= 0 && index < MAX_DEVICES &&
          devices[index].processes < MAX_PROCESSES) {
        struct process *p = &devices[index].process[devices[index].processes++];
        p->pid = pid; p->used = bytes; p->sm = sm;
      }
    }
  }
  fclose(f);
}

/* $name, else `file` in the directory this library was loaded from. */
static const char *control_file(const char *name, const char *file, char *buf, size_t size) {
  const char *env = getenv(name);
  if (env) return env;
  Dl_info info;
  if (!dladdr((void *)control_file, &info) || !info.dli_fname) return NULL;
  const char *slash = strrchr(info.dli_fname, '/');
  int dir = slash ? (int)(slash - info.dli_fname) : 1;
  snprintf(buf, size, "%.*s/%s", dir, slash ? info.dli_fname : ".", file);
  return buf;
}

/* Re-reads the script when it changed; cheap enough to run on every call. */
static void refresh(void) {
  long long now = monotonic_ns();
  if (now - last_check_ns < 5000000LL) return;
  last_check_ns = now;
  char buf[4096];
  const char *path = control_file("FAKE_NVML_SCRIPT", "script.txt", buf, sizeof buf);
  struct stat st;
  if (!path || stat(path, &st) != 0) return;
  if (st.st_ino == script_ino && st.st_mtim.tv_sec == script_mtime.tv_sec && st.st_mtim.tv_nsec == script_mtime.tv_nsec)
    return;
  script_ino = st.st_ino;
  script_mtime = st.st_mtim;
  load_script(path);
}

static void write_stats(void) {
  char buf[4096];
  const char *path = control_file("FAKE_NVML_STATS", "stats.txt", buf, sizeof buf);
  FILE *f = path ? fopen(path, "w") : NULL;
  if (!f) return;
  for (int i = 0; i < F_COUNT; i++) fprintf(f, "%s %llu\n", function_names[i], calls[i]);
  fclose(f);
}

/* The common prologue of a device call: counted, initialised, valid handle, not lost, no scripted error. */
static nvmlReturn_t enter(int fn, nvmlDevice_t device) {
  calls[fn]++;
  refresh();
  if (init_count == 0) return NVML_ERROR_UNINITIALIZED;
  if (device < devices || device >= devices + device_count) return NVML_ERROR_INVALID_ARGUMENT;
  if (device->lost) return NVML_ERROR_GPU_IS_LOST;
  return device->error[fn];
}

#ifndef OMIT_SAMPLES
/* The driver's sample buffer for one type: one sample per period boundary passed, with the value current then. */
static struct ring *advance_ring(nvmlDevice_t d, int type, unsigned int value) {
  struct ring *r = &d->rings[type];
  unsigned long long boundary = now_us() / sample_period_us * sample_period_us;
  if (r->last_us == 0 || boundary - r->last_us > RING * sample_period_us) r->last_us = boundary - RING * sample_period_us;
  for (unsigned long long t = r->last_us + sample_period_us; t <= boundary; t += sample_period_us) {
    r->ts[r->head] = t;
    r->value[r->head] = value;
    r->head = (r->head + 1) % RING;
    if (r->count < RING) r->count++;
  }
  r->last_us = boundary;
  return r;
}
#endif

#ifndef OMIT_INIT_V2
nvmlReturn_t nvmlInit_v2(void) {
  if (init_count == 0) memset(calls, 0, sizeof calls); /* stats describe one init..shutdown session */
  calls[F_nvmlInit_v2]++;
  last_check_ns = -1000000000LL;
  refresh();
  if (init_error) return init_error;
  init_count++;
  return NVML_SUCCESS;
}
#endif

/* NVML 4.304's nvmlInit "_v1"; kept by every driver since. */
nvmlReturn_t nvmlInit(void) {
  refresh();
  if (init_error) return init_error;
  init_count++;
  return NVML_SUCCESS;
}

nvmlReturn_t nvmlShutdown(void) {
  calls[F_nvmlShutdown]++;
  if (init_count == 0) return NVML_ERROR_UNINITIALIZED;
  if (--init_count == 0) write_stats();
  return NVML_SUCCESS;
}

const char *nvmlErrorString(nvmlReturn_t result) {
  switch (result) {
    case 0: return "Success";
    case 1: return "Uninitialized";
    case 2: return "Invalid Argument";
    case 3: return "Not Supported";
    case 4: return "Insufficient Permissions";
    case 5: return "Already Initialized";
    case 6: return "Not Found";
    case 7: return "Insufficient Size";
    case 8: return "Insufficient External Power";
    case 9: return "Driver Not Loaded";
    case 10: return "Timeout";
    case 11: return "Interrupt request issue";
    case 12: return "NVML Shared Library Not Found";
    case 13: return "Function Not Found";
    case 14: return "Corrupted infoROM";
    case 15: return "GPU is lost";
    case 16: return "GPU requires restart";
    case 17: return "The operating system has blocked the request.";
    case 18: return "RM has detected an NVML/RM version mismatch.";
    case 25: return "Argument version mismatch";
    default: return "Unknown Error";
  }
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
  calls[F_nvmlSystemGetDriverVersion]++;
  refresh();
  if (init_count == 0) return NVML_ERROR_UNINITIALIZED;
  if (!version) return NVML_ERROR_INVALID_ARGUMENT;
  if (strlen(driver_version) + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
  strcpy(version, driver_version);
  return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
  calls[F_nvmlDeviceGetCount_v2]++;
  refresh();
  if (init_count == 0) return NVML_ERROR_UNINITIALIZED;
  if (!count) return NVML_ERROR_INVALID_ARGUMENT;
  *count = (unsigned int)device_count;
  return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetCount(unsigned int *count) { return nvmlDeviceGetCount_v2(count); }

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
  calls[F_nvmlDeviceGetHandleByIndex_v2]++;
  refresh();
  if (init_count == 0) return NVML_ERROR_UNINITIALIZED;
  if (index >= (unsigned int)device_count || !device) return NVML_ERROR_INVALID_ARGUMENT;
  if (devices[index].lost) return NVML_ERROR_GPU_IS_LOST;
  *device = &devices[index];
  return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device) {
  return nvmlDeviceGetHandleByIndex_v2(index, device);
}

static nvmlReturn_t copy_string(const char *value, char *out, unsigned int length) {
  if (!out) return NVML_ERROR_INVALID_ARGUMENT;
  if (strlen(value) + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
  strcpy(out, value);
  return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
  nvmlReturn_t r = enter(F_nvmlDeviceGetName, device);
  return r ? r : copy_string(device->name, name, length);
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length) {
  nvmlReturn_t r = enter(F_nvmlDeviceGetUUID, device);
  return r ? r : copy_string(device->uuid, uuid, length);
}

nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t *utilization) {
  nvmlReturn_t r = enter(F_nvmlDeviceGetUtilizationRates, device);
  if (r) return r;
  if (!utilization) return NVML_ERROR_INVALID_ARGUMENT;
  utilization->gpu = device->util_gpu;
  utilization->memory = device->util_mem;
  return NVML_SUCCESS;
}

/* v1 "used" is reserved + allocated; v2 splits them (nvml.h, nvmlMemory_st / nvmlMemory_v2_st). */
nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory) {
  nvmlReturn_t r = enter(F_nvmlDeviceGetMemoryInfo, device);
  if (r) return r;
  if (!memory) return NVML_ERROR_INVALID_ARGUMENT;
  memory->total = device->mem_total;
  memory->used = device->mem_used + device->mem_reserved;
  memory->free = device->mem_total - memory->used;
  return NVML_SUCCESS;
}

#ifndef OMIT_MEMORY_V2
nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory) {
  nvmlReturn_t r = enter(F_nvmlDeviceGetMemoryInfo_v2, device);
  if (r) return r;
  if (!memory) return NVML_ERROR_INVALID_ARGUMENT;
  if (memory->version != NVML_MEMORY_V2_VERSION) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
  memory->total = device->mem_total;
  memory->reserved = device->mem_reserved;
  memory->used = device->mem_used;
  memory->free = device->mem_total - device->mem_used - device->mem_reserved;
  return NVML_SUCCESS;
}
#endif

nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int *power) {
  nvmlReturn_t r = enter(F_nvmlDeviceGetPowerUsage, device);
  if (r) return r;
  if (!power) return NVML_ERROR_INVALID_ARGUMENT;
  *power = device->power_mw;
  return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t device, int sensorType, unsigned int *temp) {
  nvmlReturn_t r = enter(F_nvmlDeviceGetTemperature, device);
  if (r) return r;
  if (!temp || sensorType != 0 /* NVML_TEMPERATURE_GPU */) return NVML_ERROR_INVALID_ARGUMENT;
  *temp = device->temp_c;
  return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t device, int type, unsigned int *clock) {
  nvmlReturn_t r = enter(F_nvmlDeviceGetClockInfo, device);
  if (r) return r;
  if (!clock || type < 0 || type > 3) return NVML_ERROR_INVALID_ARGUMENT;
  /* NVML_CLOCK_GRAPHICS 0, NVML_CLOCK_SM 1, NVML_CLOCK_MEM 2, NVML_CLOCK_VIDEO 3 */
  *clock = type == 2 ? 1593 : type == 3 ? 1755 : device->sm_clock;
  return NVML_SUCCESS;
}

/* All three generations share this contract (nvml.h): *infoCount in = capacity, out = count or needed. */
static nvmlReturn_t list_processes(int fn, nvmlDevice_t device, unsigned int *infoCount, void *infos, int size) {
  nvmlReturn_t r = enter(fn, device);
  if (r) return r;
  if (!infoCount) return NVML_ERROR_INVALID_ARGUMENT;
  unsigned int n = (unsigned int)device->processes;
  if (*infoCount < n) { *infoCount = n; return NVML_ERROR_INSUFFICIENT_SIZE; }
  if (n > 0 && !infos) return NVML_ERROR_INVALID_ARGUMENT;
  for (unsigned int i = 0; i < n; i++) {
    char *at = (char *)infos + (size_t)i * size;
    nvmlProcessInfo_r535_t entry = { device->process[i].pid, device->process[i].used, 0xFFFFFFFFu, 0xFFFFFFFFu, 0 };
    if (size == 16) {
      nvmlProcessInfo_v1_t v1 = { entry.pid, entry.usedGpuMemory };
      memcpy(at, &v1, sizeof v1);
    } else {
      memcpy(at, &entry, (size_t)size);
    }
  }
  *infoCount = n;
  return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses(nvmlDevice_t device, unsigned int *infoCount, nvmlProcessInfo_v1_t *infos) {
  return list_processes(F_nvmlDeviceGetComputeRunningProcesses, device, infoCount, infos, sizeof(nvmlProcessInfo_v1_t));
}

#ifndef OMIT_PROCESSES_V2
nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v2(nvmlDevice_t device, unsigned int *infoCount, nvmlProcessInfo_v2_t *infos) {
  return list_processes(F_nvmlDeviceGetComputeRunningProcesses_v2, device, infoCount, infos, sizeof(nvmlProcessInfo_v2_t));
}
#endif

#ifndef OMIT_PROCESSES_V3
nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t device, unsigned int *infoCount, nvmlProcessInfo_v2_t *infos) {
  return list_processes(F_nvmlDeviceGetComputeRunningProcesses_v3, device, infoCount, infos, process_info_v3_size);
}
#endif

#ifndef OMIT_SAMPLES
/* nvmlSamplingType_t: 0 total power, 1 gpu util, 2 memory util, 3 enc, 4 dec, 5 processor clock, 6 memory clock. */
nvmlReturn_t nvmlDeviceGetSamples(nvmlDevice_t device, int type, unsigned long long lastSeenTimeStamp,
                                  int *sampleValType, unsigned int *sampleCount, nvmlSample_t *samples) {
  nvmlReturn_t r = enter(F_nvmlDeviceGetSamples, device);
  if (r) return r;
  if (type < 0 || type > 6 || !sampleCount || !sampleValType) return NVML_ERROR_INVALID_ARGUMENT;
  unsigned int values[7] = { device->power_mw, device->util_gpu, device->util_mem, 0, 0, device->sm_clock, 1593 };
  struct ring *ring = advance_ring(device, type, values[type]);
  *sampleValType = 1; /* NVML_VALUE_TYPE_UNSIGNED_INT */
  if (!samples) { *sampleCount = (unsigned int)ring->count; return NVML_SUCCESS; }
  if (*sampleCount == 0) return NVML_ERROR_INVALID_ARGUMENT;
  unsigned int written = 0;
  for (int k = 0; k < ring->count && written < *sampleCount; k++) {
    int at = (ring->head - ring->count + k + RING) % RING;
    if (ring->ts[at] <= lastSeenTimeStamp) continue;
    samples[written].timeStamp = ring->ts[at];
    samples[written].sampleValue.ullVal = 0;
    samples[written].sampleValue.uiVal = ring->value[at];
    written++;
  }
  if (written == 0) return NVML_ERROR_NOT_FOUND;
  *sampleCount = written;
  return NVML_SUCCESS;
}
#endif

#ifndef OMIT_PROCESS_UTILIZATION
/* One sample per process with non-zero utilisation in the last sample period (nvml.h). */
nvmlReturn_t nvmlDeviceGetProcessUtilization(nvmlDevice_t device, nvmlProcessUtilizationSample_t *utilization,
                                             unsigned int *processSamplesCount, unsigned long long lastSeenTimeStamp) {
  nvmlReturn_t r = enter(F_nvmlDeviceGetProcessUtilization, device);
  if (r) return r;
  if (!processSamplesCount) return NVML_ERROR_INVALID_ARGUMENT;
  unsigned long long stamp = now_us() / sample_period_us * sample_period_us;
  unsigned int active = 0;
  for (int i = 0; i < device->processes; i++) if (device->process[i].sm > 0) active++;
  if (!utilization || *processSamplesCount < active) { *processSamplesCount = active; return NVML_ERROR_INSUFFICIENT_SIZE; }
  if (active == 0 || stamp <= lastSeenTimeStamp) return NVML_ERROR_NOT_FOUND;
  unsigned int n = 0;
  for (int i = 0; i < device->processes; i++) {
    struct process *p = &device->process[i];
    if (p->sm == 0) continue;
    nvmlProcessUtilizationSample_t s = { p->pid, stamp, p->sm, p->sm / 2, 0, 0 };
    utilization[n++] = s;
  }
  *processSamplesCount = n;
  return NVML_SUCCESS;
}
#endif
