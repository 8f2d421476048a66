/*
 * A stub libnvidia-ml.so.1 for carbonrun's tests: the real nvidia-ml-py binding loads it through
 * ctypes (LD_LIBRARY_PATH=<dir holding this library>) and gets GPUs whose power is known exactly.
 *
 * Configuration: STUBNVML_CONFIG names a text file of `key=value` lines (# comments allowed).
 *   gpus=N                 number of GPUs (default 1, at most 16)
 *   driver=STR             driver version string
 *   epoch=SECONDS          CLOCK_MONOTONIC time the energy counters start from and the square waves are
 *                          phased on (default: when this library was loaded)
 *   init_error=CODE        nvmlInit fails with this NVML error code (9 = DRIVER_NOT_LOADED, ...)
 *   state=PATH             power-limit changes are appended here so they persist across processes
 *   gpuI.name / gpuI.uuid  identity (defaults "NVIDIA Stub GPU I", "GPU-5b<II>0000-...")
 *   gpuI.power=MW          constant power in milliwatts (default 100000)
 *   gpuI.wave=P,HIGH,LOW   square wave instead: period P seconds, HIGH mW for the first half, LOW after
 *   gpuI.energy=0          nvmlDeviceGetTotalEnergyConsumption answers NOT_SUPPORTED
 *   gpuI.power_supported=0 nvmlDeviceGetPowerUsage answers NOT_SUPPORTED
 *   gpuI.procs=PID:BYTES,...  compute processes; PID `children` expands to every direct child of the
 *                          process that loaded this library (each with BYTES)
 *   gpuI.procs_supported=0 the process query answers NOT_SUPPORTED
 *   gpuI.mig=1             MIG mode enabled
 *   gpuI.lost_after=S      every call on this GPU answers GPU_IS_LOST from epoch + S seconds on
 *   gpuI.limit / gpuI.limit_min / gpuI.limit_max   power limit and its constraints, mW
 *   gpuI.set_error=CODE    nvmlDeviceSetPowerManagementLimit fails with CODE (4 = NO_PERMISSION)
 *
 * Truth: power(t) = min(profile(t), limit in force at t); the energy counter (mJ) is the exact integral of
 * power(t) over CLOCK_MONOTONIC from epoch. A test knowing epoch and the profile computes the same integral.
 * stubnvml_count(name) returns how often "init", "shutdown", "energy", "power" or "procs" (one per process
 * list query) was called, and "live" the current init reference count.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef int nvmlReturn_t;
enum {
    OK = 0, E_UNINIT = 1, E_INVALID = 2, E_NOT_SUPPORTED = 3, E_NO_PERMISSION = 4,
    E_INSUFFICIENT_SIZE = 7, E_GPU_IS_LOST = 15, E_UNKNOWN = 999
};

#define MAX_GPUS 16
#define MAX_PROCS 32
#define MAX_CHANGES 1024

/* nvmlProcessInfo_v2_t; nvidia-ml-py uses the same layout for the _v3 call. */
typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} proc_info_t;

typedef struct {
    char name[96], uuid[96];
    double high_mw, low_mw, period_s; /* constant power when period_s == 0 */
    int energy_ok, power_ok, procs_ok, mig, set_error;
    double lost_after; /* < 0: never lost */
    unsigned limit_mw, min_mw, max_mw;
    int nprocs;
    long pids[MAX_PROCS]; /* -1: the loading process's children */
    unsigned long long mems[MAX_PROCS];
} gpu_t;

typedef gpu_t *nvmlDevice_t;

static gpu_t gpus[MAX_GPUS];
static int ngpus = 1, init_error = 0, live = 0;
static double epoch;
static char driver[80] = "555.42.06", state_path[4096];
static long n_init, n_shutdown, n_energy, n_power, n_procs;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void set_defaults(void) {
    for (int i = 0; i < MAX_GPUS; i++) {
        gpu_t *g = &gpus[i];
        memset(g, 0, sizeof *g);
        snprintf(g->name, sizeof g->name, "NVIDIA Stub GPU %d", i);
        snprintf(g->uuid, sizeof g->uuid, "GPU-5b%02d0000-0000-4000-8000-%012d", i, i);
        g->high_mw = g->low_mw = 100000;
        g->energy_ok = g->power_ok = g->procs_ok = 1;
        g->lost_after = -1;
        g->min_mw = 100000;
        g->max_mw = 0; /* filled in after parsing: max(400 W, peak power) */
        g->limit_mw = 0;
    }
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = 0;
    return s;
}

static void parse_procs(gpu_t *g, char *v) {
    g->nprocs = 0;
    for (char *tok = strtok(v, ","); tok && g->nprocs < MAX_PROCS; tok = strtok(NULL, ",")) {
        char *colon = strchr(tok, ':');
        tok = trim(tok);
        g->pids[g->nprocs] = strncmp(tok, "children", 8) == 0 ? -1 : atol(tok);
        g->mems[g->nprocs] = colon ? strtoull(colon + 1, NULL, 10) : 0;
        g->nprocs++;
    }
}

static void set_gpu_key(gpu_t *g, const char *k, char *v) {
    if (!strcmp(k, "name")) snprintf(g->name, sizeof g->name, "%s", v);
    else if (!strcmp(k, "uuid")) snprintf(g->uuid, sizeof g->uuid, "%s", v);
    else if (!strcmp(k, "power")) { g->high_mw = g->low_mw = atof(v); g->period_s = 0; }
    else if (!strcmp(k, "wave")) sscanf(v, "%lf,%lf,%lf", &g->period_s, &g->high_mw, &g->low_mw);
    else if (!strcmp(k, "energy")) g->energy_ok = atoi(v);
    else if (!strcmp(k, "power_supported")) g->power_ok = atoi(v);
    else if (!strcmp(k, "procs")) parse_procs(g, v);
    else if (!strcmp(k, "procs_supported")) g->procs_ok = atoi(v);
    else if (!strcmp(k, "mig")) g->mig = atoi(v);
    else if (!strcmp(k, "lost_after")) g->lost_after = atof(v);
    else if (!strcmp(k, "limit")) g->limit_mw = (unsigned)atol(v);
    else if (!strcmp(k, "limit_min")) g->min_mw = (unsigned)atol(v);
    else if (!strcmp(k, "limit_max")) g->max_mw = (unsigned)atol(v);
    else if (!strcmp(k, "set_error")) g->set_error = atoi(v);
}

static void set_key(const char *k, char *v) {
    int i;
    char sub[64];
    if (!strcmp(k, "gpus")) ngpus = atoi(v) < MAX_GPUS ? atoi(v) : MAX_GPUS;
    else if (!strcmp(k, "driver")) snprintf(driver, sizeof driver, "%s", v);
    else if (!strcmp(k, "epoch")) epoch = atof(v);
    else if (!strcmp(k, "init_error")) init_error = atoi(v);
    else if (!strcmp(k, "state")) snprintf(state_path, sizeof state_path, "%s", v);
    else if (sscanf(k, "gpu%d.%63s", &i, sub) == 2 && i >= 0 && i < MAX_GPUS) set_gpu_key(&gpus[i], sub, v);
}

static void load_config(void) {
    const char *path = getenv("STUBNVML_CONFIG");
    FILE *f = path ? fopen(path, "r") : NULL;
    char line[4096];
    while (f && fgets(line, sizeof line, f)) {
        char *s = trim(line), *eq = strchr(s, '=');
        if (*s == '#' || !eq) continue;
        *eq = 0;
        set_key(trim(s), trim(eq + 1));
    }
    if (f) fclose(f);
    for (int i = 0; i < MAX_GPUS; i++) {
        gpu_t *g = &gpus[i];
        double peak = fmax(g->high_mw, g->low_mw);
        if (!g->max_mw) g->max_mw = peak > 400000 ? (unsigned)peak : 400000;
        if (!g->limit_mw) g->limit_mw = g->max_mw;
    }
}

__attribute__((constructor)) static void stub_load(void) {
    epoch = now_s();
    set_defaults();
    load_config();
}

/* ---- truth: power and its exact integral ---- */

static double profile_mw(const gpu_t *g, double cap, double t) {
    double hi = fmin(g->high_mw, cap), lo = fmin(g->low_mw, cap);
    if (g->period_s <= 0) return hi;
    double r = fmod(t - epoch, g->period_s);
    if (r < 0) r += g->period_s;
    return r < g->period_s / 2 ? hi : lo;
}

/* mJ from epoch to t under a constant cap. */
static double cum_mj(const gpu_t *g, double cap, double t) {
    double x = t - epoch, hi = fmin(g->high_mw, cap), lo = fmin(g->low_mw, cap);
    if (x <= 0) return 0;
    if (g->period_s <= 0) return hi * x;
    double half = g->period_s / 2, n = floor(x / g->period_s), r = x - n * g->period_s;
    return n * (hi + lo) * half + hi * fmin(r, half) + lo * fmax(0, r - half);
}

typedef struct { double t; unsigned mw; } change_t;

/* Power-limit changes of GPU i, in the order they were made (from the state file). */
static int load_changes(int i, change_t *out) {
    FILE *f = state_path[0] ? fopen(state_path, "r") : NULL;
    int n = 0, idx;
    double t;
    unsigned mw;
    while (f && n < MAX_CHANGES && fscanf(f, "%d %lf %u", &idx, &t, &mw) == 3)
        if (idx == i) out[n++] = (change_t){t, mw};
    if (f) fclose(f);
    return n;
}

static unsigned cap_at(int i, double t) {
    static change_t ch[MAX_CHANGES];
    int n = load_changes(i, ch);
    unsigned cap = gpus[i].limit_mw;
    for (int k = 0; k < n && ch[k].t <= t; k++) cap = ch[k].mw;
    return cap;
}

static double energy_mj(int i, double t) {
    static change_t ch[MAX_CHANGES];
    const gpu_t *g = &gpus[i];
    int n = load_changes(i, ch);
    double cap = g->limit_mw, start = epoch, e = 0;
    for (int k = 0; k < n && ch[k].t <= t; k++) {
        if (ch[k].t > start) {
            e += cum_mj(g, cap, ch[k].t) - cum_mj(g, cap, start);
            start = ch[k].t;
        }
        cap = ch[k].mw;
    }
    if (t > start) e += cum_mj(g, cap, t) - cum_mj(g, cap, start);
    return e;
}

/* ---- checks shared by every device call ---- */

static int index_of(nvmlDevice_t d) {
    if (d < gpus || d >= gpus + ngpus) return -1;
    return (int)(d - gpus);
}

static nvmlReturn_t check(nvmlDevice_t d) {
    if (!live) return E_UNINIT;
    if (index_of(d) < 0) return E_INVALID;
    if (d->lost_after >= 0 && now_s() - epoch >= d->lost_after) return E_GPU_IS_LOST;
    return OK;
}

#define CHECK(d)                              \
    do {                                      \
        nvmlReturn_t rc_ = check(d);          \
        if (rc_ != OK) return rc_;            \
    } while (0)

static nvmlReturn_t copy_str(char *dst, unsigned len, const char *src) {
    if (!dst || strlen(src) + 1 > len) return E_INSUFFICIENT_SIZE;
    memcpy(dst, src, strlen(src) + 1);
    return OK;
}

/* ---- test helper ---- */

long stubnvml_count(const char *what) {
    if (!strcmp(what, "init")) return n_init;
    if (!strcmp(what, "shutdown")) return n_shutdown;
    if (!strcmp(what, "energy")) return n_energy;
    if (!strcmp(what, "power")) return n_power;
    if (!strcmp(what, "procs")) return n_procs;
    if (!strcmp(what, "live")) return live;
    return -1;
}

/* ---- the NVML API ---- */

nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    if (init_error) return init_error;
    pthread_mutex_lock(&mu);
    live++;
    n_init++;
    pthread_mutex_unlock(&mu);
    return OK;
}
nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }
nvmlReturn_t nvmlInit(void) { return nvmlInitWithFlags(0); }

nvmlReturn_t nvmlShutdown(void) {
    nvmlReturn_t rc = OK;
    pthread_mutex_lock(&mu);
    if (live == 0) rc = E_UNINIT;
    else { live--; n_shutdown++; }
    pthread_mutex_unlock(&mu);
    return rc;
}

const char *nvmlErrorString(nvmlReturn_t r) {
    switch (r) {
    case OK: return "Success";
    case E_UNINIT: return "Uninitialized";
    case E_INVALID: return "Invalid Argument";
    case E_NOT_SUPPORTED: return "Not Supported";
    case E_NO_PERMISSION: return "Insufficient Permissions";
    case E_INSUFFICIENT_SIZE: return "Insufficient Size";
    case 9: return "Driver Not Loaded";
    case E_GPU_IS_LOST: return "GPU is lost";
    default: return "Unknown Error";
    }
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int len) {
    if (!live) return E_UNINIT;
    return copy_str(version, len, driver);
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    if (!live) return E_UNINIT;
    if (!count) return E_INVALID;
    *count = (unsigned)ngpus;
    return OK;
}
nvmlReturn_t nvmlDeviceGetCount(unsigned int *count) { return nvmlDeviceGetCount_v2(count); }

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    if (!live) return E_UNINIT;
    if (index >= (unsigned)ngpus || !device) return E_INVALID;
    *device = &gpus[index];
    return OK;
}
nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device) {
    return nvmlDeviceGetHandleByIndex_v2(index, device);
}

nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device) {
    if (!live) return E_UNINIT;
    for (int i = 0; uuid && device && i < ngpus; i++)
        if (!strcmp(uuid, gpus[i].uuid)) { *device = &gpus[i]; return OK; }
    return 6; /* NOT_FOUND */
}

nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t d, unsigned int *index) {
    CHECK(d);
    *index = (unsigned)index_of(d);
    return OK;
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t d, char *name, unsigned int len) {
    CHECK(d);
    return copy_str(name, len, d->name);
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t d, char *uuid, unsigned int len) {
    CHECK(d);
    return copy_str(uuid, len, d->uuid);
}

nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t d, unsigned int *current, unsigned int *pending) {
    CHECK(d);
    *current = *pending = (unsigned)d->mig;
    return OK;
}

nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t d, unsigned long long *mj) {
    CHECK(d);
    __atomic_add_fetch(&n_energy, 1, __ATOMIC_RELAXED);
    if (!d->energy_ok) return E_NOT_SUPPORTED;
    pthread_mutex_lock(&mu);
    *mj = (unsigned long long)energy_mj(index_of(d), now_s());
    pthread_mutex_unlock(&mu);
    return OK;
}

nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t d, unsigned int *mw) {
    CHECK(d);
    __atomic_add_fetch(&n_power, 1, __ATOMIC_RELAXED);
    if (!d->power_ok) return E_NOT_SUPPORTED;
    double t = now_s();
    pthread_mutex_lock(&mu);
    *mw = (unsigned)profile_mw(d, cap_at(index_of(d), t), t);
    pthread_mutex_unlock(&mu);
    return OK;
}

/* Direct children of this process (for procs=children). */
static int children(long *out, int max) {
    DIR *dir = opendir("/proc");
    struct dirent *e;
    int n = 0;
    long me = (long)getpid();
    while (dir && n < max && (e = readdir(dir))) {
        char path[300], buf[512];
        long ppid = 0;
        if (!isdigit((unsigned char)e->d_name[0])) continue;
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t got = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[got] = 0;
        char *rp = strrchr(buf, ')');
        if (rp && sscanf(rp + 2, "%*c %ld", &ppid) == 1 && ppid == me) out[n++] = atol(e->d_name);
    }
    if (dir) closedir(dir);
    return n;
}

static nvmlReturn_t running(nvmlDevice_t d, unsigned int *count, proc_info_t *infos) {
    CHECK(d);
    if (!count) return E_INVALID;
    if (!infos) __atomic_add_fetch(&n_procs, 1, __ATOMIC_RELAXED);
    if (!d->procs_ok) return E_NOT_SUPPORTED;
    proc_info_t all[MAX_PROCS * 2];
    unsigned n = 0;
    for (int k = 0; k < d->nprocs && n < MAX_PROCS * 2; k++) {
        long kids[MAX_PROCS];
        int nk = d->pids[k] == -1 ? children(kids, MAX_PROCS) : 1;
        if (d->pids[k] != -1) kids[0] = d->pids[k];
        for (int j = 0; j < nk && n < MAX_PROCS * 2; j++)
            all[n++] = (proc_info_t){(unsigned)kids[j], d->mems[k], 0xFFFFFFFFu, 0xFFFFFFFFu};
    }
    if (*count < n || (n && !infos)) {
        *count = n;
        return E_INSUFFICIENT_SIZE;
    }
    if (n) memcpy(infos, all, n * sizeof *all);
    *count = n;
    return OK;
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t d, unsigned int *count, proc_info_t *infos) {
    return running(d, count, infos);
}
nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v2(nvmlDevice_t d, unsigned int *count, proc_info_t *infos) {
    return running(d, count, infos);
}

nvmlReturn_t nvmlDeviceGetPowerManagementLimit(nvmlDevice_t d, unsigned int *limit) {
    CHECK(d);
    pthread_mutex_lock(&mu);
    *limit = cap_at(index_of(d), now_s());
    pthread_mutex_unlock(&mu);
    return OK;
}
nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t d, unsigned int *limit) {
    return nvmlDeviceGetPowerManagementLimit(d, limit);
}
nvmlReturn_t nvmlDeviceGetPowerManagementDefaultLimit(nvmlDevice_t d, unsigned int *limit) {
    CHECK(d);
    *limit = d->limit_mw;
    return OK;
}

nvmlReturn_t nvmlDeviceGetPowerManagementLimitConstraints(nvmlDevice_t d, unsigned int *lo, unsigned int *hi) {
    CHECK(d);
    *lo = d->min_mw;
    *hi = d->max_mw;
    return OK;
}

nvmlReturn_t nvmlDeviceSetPowerManagementLimit(nvmlDevice_t d, unsigned int limit) {
    CHECK(d);
    if (d->set_error) return d->set_error;
    if (limit < d->min_mw || limit > d->max_mw) return E_INVALID;
    if (!state_path[0]) return E_UNKNOWN; /* nowhere to keep it: configure state= */
    pthread_mutex_lock(&mu);
    FILE *f = fopen(state_path, "a");
    if (f) {
        fprintf(f, "%d %.9f %u\n", index_of(d), now_s(), limit);
        fclose(f);
    }
    pthread_mutex_unlock(&mu);
    return f ? OK : E_UNKNOWN;
}
