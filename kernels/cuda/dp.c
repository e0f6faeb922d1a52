/* kernels/cuda/dp.c — NCCL for data-parallel training (cuda_ops.h's dp section). Plain C against
 * the toolkit's nccl.h, with libnccl.so.2 loaded by dlopen on first use, so an xtrain that never
 * runs data-parallel never needs the library. Communicators are non-blocking (ncclConfig_t's
 * blocking = 0): every NCCL call and every collective is waited for by polling, with a deadline,
 * so a rank that died or hangs makes the others fail instead of waiting forever. */
#include "cuda_ops.h"

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <dlfcn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The functions used, as pointer types written from nccl.h's declarations; each is checked
 * against the header's prototype by the compiler (_Generic does not evaluate its operand, so
 * nothing refers to the symbols and nothing links against libnccl). */
typedef ncclResult_t (*nccl_get_version_fn)(int *version);
typedef ncclResult_t (*nccl_get_unique_id_fn)(ncclUniqueId *unique_id);
typedef ncclResult_t (*nccl_comm_init_rank_config_fn)(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank,
                                                      ncclConfig_t *config);
typedef ncclResult_t (*nccl_comm_get_async_error_fn)(ncclComm_t comm, ncclResult_t *async_error);
typedef ncclResult_t (*nccl_all_reduce_fn)(const void *sendbuff, void *recvbuff, size_t count,
                                           ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                                           cudaStream_t stream);
typedef ncclResult_t (*nccl_comm_fn)(ncclComm_t comm); /* ncclCommFinalize, ncclCommDestroy, ncclCommAbort */
typedef const char *(*nccl_get_error_string_fn)(ncclResult_t result);
typedef const char *(*nccl_get_last_error_fn)(ncclComm_t comm);

#define XD_NCCL_PROTOTYPE(fn, type) \
    _Static_assert(_Generic(&fn, type: 1, default: 0), #fn ": nccl.h's prototype differs from " #type)
XD_NCCL_PROTOTYPE(ncclGetVersion, nccl_get_version_fn);
XD_NCCL_PROTOTYPE(ncclGetUniqueId, nccl_get_unique_id_fn);
XD_NCCL_PROTOTYPE(ncclCommInitRankConfig, nccl_comm_init_rank_config_fn);
XD_NCCL_PROTOTYPE(ncclCommGetAsyncError, nccl_comm_get_async_error_fn);
XD_NCCL_PROTOTYPE(ncclAllReduce, nccl_all_reduce_fn);
XD_NCCL_PROTOTYPE(ncclCommFinalize, nccl_comm_fn);
XD_NCCL_PROTOTYPE(ncclCommDestroy, nccl_comm_fn);
XD_NCCL_PROTOTYPE(ncclCommAbort, nccl_comm_fn);
XD_NCCL_PROTOTYPE(ncclGetErrorString, nccl_get_error_string_fn);
XD_NCCL_PROTOTYPE(ncclGetLastError, nccl_get_last_error_fn);
_Static_assert(KERN_DP_ID_BYTES == NCCL_UNIQUE_ID_BYTES, "KERN_DP_ID_BYTES is not NCCL_UNIQUE_ID_BYTES");

static struct {
    void *lib;
    char library[600]; /* "NCCL 2.28.9 (libnccl.so.2)" */
    nccl_get_version_fn get_version;
    nccl_get_unique_id_fn get_unique_id;
    nccl_comm_init_rank_config_fn init_rank_config;
    nccl_comm_get_async_error_fn get_async_error;
    nccl_all_reduce_fn all_reduce;
    nccl_comm_fn finalize, destroy, abort_comm;
    nccl_get_error_string_fn error_string;
    nccl_get_last_error_fn last_error; /* NULL when the library lacks it */
} nccl;

static char dp_error[2048];

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dp_error, sizeof dp_error, fmt, ap);
    va_end(ap);
    return -1;
}

const char *kern_cuda_dp_last_error(void) { return dp_error; }
const char *kern_cuda_dp_library(void) { return nccl.library; }

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void pause_briefly(void) {
    struct timespec ts = {0, 20000}; /* 20 us: nothing next to a step's all-reduce */
    nanosleep(&ts, NULL);
}

/* dlsym's void * into a function pointer without an object-to-function cast */
static bool resolve(void *lib, const char *name, void *fn, size_t size) {
    void *p = dlsym(lib, name);
    if (p) memcpy(fn, &p, size);
    return p != NULL;
}
#define RESOLVE(lib, name, field) resolve(lib, name, &nccl.field, sizeof nccl.field)

static int load(void) {
    if (nccl.lib) return 0;
    const char *env = getenv("XD_NCCL_LIBRARY");
    const char *candidates[3];
    int n = 0;
    if (env && *env) {
        candidates[n++] = env; /* named: only that one */
    } else {
        candidates[n++] = "libnccl.so.2";
#ifdef XD_NCCL_TOOLKIT_LIBRARY
        candidates[n++] = XD_NCCL_TOOLKIT_LIBRARY;
#endif
    }
    char tried[1500] = "";
    size_t used = 0;
    void *lib = NULL;
    const char *name = NULL;
    for (int i = 0; i < n && !lib; i++) {
        lib = dlopen(candidates[i], RTLD_NOW | RTLD_LOCAL);
        if (lib) {
            name = candidates[i];
        } else if (used < sizeof tried) {
            const char *why = dlerror();
            int w = snprintf(tried + used, sizeof tried - used, "%s%s (%.300s)", i ? "; " : "", candidates[i],
                             why ? why : "not found");
            if (w > 0) used += (size_t)w;
        }
    }
    if (!lib) {
        if (env && *env)
            return fail("cannot load NCCL from XD_NCCL_LIBRARY=%s: %s", env, tried);
        const char *ld = getenv("LD_LIBRARY_PATH");
        return fail("cannot load NCCL (libnccl.so.2), needed for data parallelism: tried %s, with "
                    "LD_LIBRARY_PATH=%s; set XD_NCCL_LIBRARY to the file (e.g. a CUDA toolkit's "
                    "lib64/libnccl.so.2, or pip's nvidia/nccl/lib/libnccl.so.2) or add its directory to "
                    "LD_LIBRARY_PATH",
                    tried, ld && *ld ? ld : "(unset)");
    }
    static const char *required[] = {"ncclGetVersion", "ncclGetUniqueId", "ncclCommInitRankConfig",
                                     "ncclCommGetAsyncError", "ncclAllReduce", "ncclCommFinalize",
                                     "ncclCommDestroy", "ncclCommAbort", "ncclGetErrorString"};
    bool ok = RESOLVE(lib, required[0], get_version) && RESOLVE(lib, required[1], get_unique_id) &&
              RESOLVE(lib, required[2], init_rank_config) && RESOLVE(lib, required[3], get_async_error) &&
              RESOLVE(lib, required[4], all_reduce) && RESOLVE(lib, required[5], finalize) &&
              RESOLVE(lib, required[6], destroy) && RESOLVE(lib, required[7], abort_comm) &&
              RESOLVE(lib, required[8], error_string);
    if (!ok) {
        const char *missing = "?";
        for (size_t i = 0; i < sizeof required / sizeof *required; i++)
            if (!dlsym(lib, required[i])) {
                missing = required[i];
                break;
            }
        dlclose(lib);
        memset(&nccl, 0, sizeof nccl);
        return fail("%s has no %s: NCCL 2.14 or later is needed (non-blocking communicators)", name, missing);
    }
    if (!RESOLVE(lib, "ncclGetLastError", last_error)) nccl.last_error = NULL;
    int v = 0;
    if (nccl.get_version(&v) != ncclSuccess || v < 21400) {
        dlclose(lib);
        memset(&nccl, 0, sizeof nccl);
        return fail("%s is NCCL version code %d: 2.14 or later (21400) is needed", name, v);
    }
    nccl.lib = lib;
    snprintf(nccl.library, sizeof nccl.library, "NCCL %d.%d.%d (%s)", v / 10000, v / 100 % 100, v % 100, name);
    return 0;
}

struct kern_dp_comm {
    ncclComm_t comm;       /* NULL once aborted */
    int rank, size, device;
    double timeout;
    cudaStream_t stream;   /* the collectives' */
    cudaEvent_t ready, done;
    void *dev_scratch;     /* 32 x 8 bytes: the host values' all-reduce */
    void *host_scratch;    /* pinned, the same size: the copies never block on a stalled stream */
};

/* what NCCL says about the failure: the code's text and the communicator's last message */
static const char *nccl_text(kern_dp_comm *c, ncclResult_t r, char *buf, size_t cap) {
    const char *last = nccl.last_error && c && c->comm ? nccl.last_error(c->comm) : NULL;
    snprintf(buf, cap, "%s%s%.600s", nccl.error_string(r), last && *last ? ": " : "", last && *last ? last : "");
    return buf;
}

static void abort_comm(kern_dp_comm *c) {
    if (c->comm) nccl.abort_comm(c->comm);
    c->comm = NULL;
}

/* Fails (and aborts the communicator) with "rank R of N: WHAT: why". */
static int comm_fail(kern_dp_comm *c, const char *what, const char *why) {
    char msg[1200];
    snprintf(msg, sizeof msg, "%s", why); /* why may point into NCCL's state, gone after the abort */
    abort_comm(c);
    return fail("rank %d of %d: %s: %s", c->rank, c->size, what, msg);
}

/* Polls the communicator's state until the call in progress has settled (ncclInProgress no
 * more), at most until the deadline. */
static int settle(kern_dp_comm *c, double deadline, const char *what) {
    char buf[800];
    for (;;) {
        ncclResult_t st = ncclInProgress;
        ncclResult_t r = nccl.get_async_error(c->comm, &st);
        if (r != ncclSuccess) return comm_fail(c, what, nccl_text(c, r, buf, sizeof buf));
        if (st == ncclSuccess) return 0;
        if (st != ncclInProgress) return comm_fail(c, what, nccl_text(c, st, buf, sizeof buf));
        if (now_s() > deadline) {
            snprintf(buf, sizeof buf, "not done after %.0f s (another rank failed, hangs or never joined)", c->timeout);
            return comm_fail(c, what, buf);
        }
        pause_briefly();
    }
}

/* a CUDA call of the communicator's: on failure the communicator is aborted */
#define DP_CUDA(c, call)                                                                          \
    do {                                                                                          \
        cudaError_t err_ = (call);                                                                \
        if (err_ != cudaSuccess) return comm_fail((c), #call, cudaGetErrorString(err_));          \
    } while (0)

int kern_cuda_dp_create_id(unsigned char id[KERN_DP_ID_BYTES]) {
    if (load()) return -1;
    ncclUniqueId u;
    ncclResult_t r = nccl.get_unique_id(&u);
    if (r != ncclSuccess)
        return fail("ncclGetUniqueId: %s (NCCL_SOCKET_IFNAME picks the network interface it listens on)",
                    nccl.error_string(r));
    memcpy(id, u.internal, KERN_DP_ID_BYTES);
    return 0;
}

static void free_resources(kern_dp_comm *c) {
    if (c->host_scratch) cudaFreeHost(c->host_scratch);
    if (c->dev_scratch) cudaFree(c->dev_scratch);
    if (c->done) cudaEventDestroy(c->done);
    if (c->ready) cudaEventDestroy(c->ready);
    if (c->stream) cudaStreamDestroy(c->stream);
    free(c);
}

int kern_cuda_dp_open(kern_dp_comm **out, const unsigned char id[KERN_DP_ID_BYTES], int rank, int size, int device,
                      double timeout_s) {
    *out = NULL;
    if (load()) return -1;
    if (size < 1 || rank < 0 || rank >= size) return fail("rank %d of %d: no such rank", rank, size);
    kern_dp_comm *c = calloc(1, sizeof *c);
    if (!c) return fail("out of memory");
    c->rank = rank, c->size = size, c->device = device, c->timeout = timeout_s > 0 ? timeout_s : 300;
    cudaError_t ce = cudaSetDevice(device);
    if (ce == cudaSuccess) ce = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
    if (ce == cudaSuccess) ce = cudaEventCreateWithFlags(&c->ready, cudaEventDisableTiming);
    if (ce == cudaSuccess) ce = cudaEventCreateWithFlags(&c->done, cudaEventDisableTiming);
    if (ce == cudaSuccess) ce = cudaMalloc(&c->dev_scratch, 32 * 8);
    if (ce == cudaSuccess) ce = cudaMallocHost(&c->host_scratch, 32 * 8);
    if (ce != cudaSuccess) {
        free_resources(c);
        return fail("rank %d of %d: device %d: %s", rank, size, device, cudaGetErrorString(ce));
    }
    ncclUniqueId u;
    memcpy(u.internal, id, KERN_DP_ID_BYTES);
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER; /* an older library reads the fields it knows */
    config.blocking = 0;
    char buf[800];
    ncclResult_t r = nccl.init_rank_config(&c->comm, size, u, rank, &config);
    int rc = 0;
    if (r != ncclSuccess && r != ncclInProgress)
        rc = comm_fail(c, "ncclCommInitRankConfig", nccl_text(c, r, buf, sizeof buf));
    else if (!c->comm)
        rc = fail("rank %d of %d: ncclCommInitRankConfig gave no communicator", rank, size);
    else
        rc = settle(c, now_s() + c->timeout, "forming the communicator");
    if (rc) {
        free_resources(c);
        return -1;
    }
    *out = c;
    return 0;
}

static int all_reduce(kern_dp_comm *c, void *buf, size_t n, ncclDataType_t type, ncclRedOp_t op,
                      cudaStream_t after) {
    if (!c->comm) return fail("rank %d of %d: the communicator was aborted after an earlier error", c->rank, c->size);
    char text[800];
    if (after) { /* the caller's stream: the data is ready once its queued work is */
        DP_CUDA(c, cudaEventRecord(c->ready, after));
        DP_CUDA(c, cudaStreamWaitEvent(c->stream, c->ready, 0));
    }
    ncclResult_t r = nccl.all_reduce(buf, buf, n, type, op, c->comm, c->stream);
    if (r == ncclInProgress) {
        if (settle(c, now_s() + c->timeout, "ncclAllReduce")) return -1;
    } else if (r != ncclSuccess) {
        return comm_fail(c, "ncclAllReduce", nccl_text(c, r, text, sizeof text));
    }
    DP_CUDA(c, cudaEventRecord(c->done, c->stream));
    return 0;
}

int kern_cuda_dp_sum_f32(kern_dp_comm *c, float *buf, size_t n, kern_cuda_stream s) {
    /* the legacy default stream is NULL: mark it with cudaStreamLegacy so its work is waited for */
    cudaStream_t after = s ? (cudaStream_t)s : cudaStreamLegacy;
    if (all_reduce(c, buf, n, ncclFloat32, ncclSum, after)) return -1;
    DP_CUDA(c, cudaStreamWaitEvent(after, c->done, 0)); /* later work on s comes after the sum */
    return 0;
}

int kern_cuda_dp_wait(kern_dp_comm *c) {
    if (!c->comm) return fail("rank %d of %d: the communicator was aborted after an earlier error", c->rank, c->size);
    double deadline = now_s() + c->timeout;
    char buf[800];
    for (;;) {
        cudaError_t q = cudaEventQuery(c->done);
        if (q == cudaSuccess) return 0;
        if (q != cudaErrorNotReady) return comm_fail(c, "waiting for an all-reduce", cudaGetErrorString(q));
        (void)cudaGetLastError(); /* "not ready" is no error: keep it from the next launch's check */
        ncclResult_t st = ncclSuccess;
        ncclResult_t r = nccl.get_async_error(c->comm, &st);
        if (r != ncclSuccess) return comm_fail(c, "waiting for an all-reduce", nccl_text(c, r, buf, sizeof buf));
        if (st != ncclSuccess && st != ncclInProgress)
            return comm_fail(c, "waiting for an all-reduce", nccl_text(c, st, buf, sizeof buf));
        if (now_s() > deadline) {
            snprintf(buf, sizeof buf,
                     "not done after %.0f s: another rank failed, hangs, or is not at the same step", c->timeout);
            return comm_fail(c, "waiting for an all-reduce", buf);
        }
        pause_briefly();
    }
}

static int host_reduce(kern_dp_comm *c, void *v, int n, ncclDataType_t type, ncclRedOp_t op) {
    if (n < 0 || n > 32) return fail("kern_cuda_dp: %d host values (at most 32)", n);
    if (!c->comm) return fail("rank %d of %d: the communicator was aborted after an earlier error", c->rank, c->size);
    memcpy(c->host_scratch, v, (size_t)n * 8);
    DP_CUDA(c, cudaMemcpyAsync(c->dev_scratch, c->host_scratch, (size_t)n * 8, cudaMemcpyHostToDevice, c->stream));
    if (all_reduce(c, c->dev_scratch, (size_t)n, type, op, NULL)) return -1;
    DP_CUDA(c, cudaMemcpyAsync(c->host_scratch, c->dev_scratch, (size_t)n * 8, cudaMemcpyDeviceToHost, c->stream));
    DP_CUDA(c, cudaEventRecord(c->done, c->stream));
    if (kern_cuda_dp_wait(c)) return -1;
    memcpy(v, c->host_scratch, (size_t)n * 8);
    return 0;
}

int kern_cuda_dp_sum_host_f64(kern_dp_comm *c, double *v, int n) { return host_reduce(c, v, n, ncclFloat64, ncclSum); }
int kern_cuda_dp_max_host_u64(kern_dp_comm *c, uint64_t *v, int n) { return host_reduce(c, v, n, ncclUint64, ncclMax); }

void kern_cuda_dp_close(kern_dp_comm *c) {
    if (!c) return;
    if (c->comm) {
        cudaSetDevice(c->device);
        ncclResult_t r = nccl.finalize(c->comm);
        if ((r == ncclSuccess || r == ncclInProgress) && settle(c, now_s() + c->timeout, "closing the communicator") == 0)
            nccl.destroy(c->comm);
        else
            abort_comm(c); /* settle aborted it already when it failed */
        c->comm = NULL;
    }
    free_resources(c);
}

void kern_cuda_dp_abort(kern_dp_comm *c) {
    if (!c) return;
    abort_comm(c);
    free_resources(c);
}
