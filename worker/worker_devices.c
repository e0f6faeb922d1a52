/* The devices a worker announces: the CPU (its model and the machine's memory), or the CUDA
 * devices named by --gpus with their names and memory from nvidia-smi when it is there. */
#include "worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void cpu_name(char *out, size_t cap) {
    snprintf(out, cap, "cpu");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) != 0) continue;
        char *c = strchr(line, ':');
        if (!c) break;
        for (c++; *c == ' ' || *c == '\t'; c++) {
        }
        c[strcspn(c, "\n")] = 0;
        if (*c) snprintf(out, cap, "%s", c);
        break;
    }
    fclose(f);
}

int worker_devices_cpu(worker *w) {
    worker_device *d = &w->devices[0];
    memset(d, 0, sizeof *d);
    snprintf(d->kind, sizeof d->kind, "cpu");
    d->index = 0;
    char model[100];
    cpu_name(model, sizeof model);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    snprintf(d->name, sizeof d->name, "%s (%ld cores)", model, cores > 0 ? cores : 1);
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    d->memory_mb = pages > 0 && page > 0 ? (long long)pages * page / (1024 * 1024) : 0;
    w->n_devices = 1;
    w->cpu = true;
    return 0;
}

/* nvidia-smi's name and memory of GPU index, when it answers. */
static void nvidia_smi(worker_device *d) {
    char cmd[256], line[512];
    snprintf(cmd, sizeof cmd,
             "timeout 20 nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits -i %d 2>/dev/null",
             d->index);
    FILE *p = popen(cmd, "r");
    if (!p) return;
    if (fgets(line, sizeof line, p)) {
        line[strcspn(line, "\n")] = 0;
        char *comma = strrchr(line, ',');
        if (comma) {
            *comma = 0;
            long long mb = strtoll(comma + 1, NULL, 10);
            if (line[0] && mb > 0) {
                snprintf(d->name, sizeof d->name, "%.100s", line);
                d->memory_mb = mb;
            }
        }
    }
    pclose(p);
}

int worker_devices_gpus(worker *w, const char *list, xd_err *e) {
    w->n_devices = 0;
    w->cpu = false;
    const char *c = list;
    while (*c) {
        char *end;
        long v = strtol(c, &end, 10);
        if (end == c || v < 0 || v > 1023 || (*end && *end != ','))
            return xd_fail(e, "--gpus expects indices like 0,1, got \"%s\"", list);
        for (int i = 0; i < w->n_devices; i++)
            if (w->devices[i].index == v) return xd_fail(e, "--gpus names GPU %ld twice", v);
        if (w->n_devices == WORKER_MAX_GPUS) return xd_fail(e, "--gpus: at most %d GPUs", WORKER_MAX_GPUS);
        worker_device *d = &w->devices[w->n_devices++];
        memset(d, 0, sizeof *d);
        snprintf(d->kind, sizeof d->kind, "cuda");
        d->index = (int)v;
        snprintf(d->name, sizeof d->name, "cuda:%ld", v);
        nvidia_smi(d);
        c = *end ? end + 1 : end;
        if (*end && !*c) return xd_fail(e, "--gpus expects indices like 0,1, got \"%s\"", list);
    }
    if (w->n_devices == 0) return xd_fail(e, "--gpus needs at least one index");
    return 0;
}

json_t *worker_devices_json(const worker *w) {
    json_t *a = json_array();
    for (int i = 0; i < w->n_devices; i++) {
        const worker_device *d = &w->devices[i];
        json_t *name = json_string(d->name);
        if (!name) name = json_string(d->kind);
        json_array_append_new(a, json_pack("{s:s, s:i, s:o, s:I}", "kind", d->kind, "index", d->index,
                                           "name", name, "memory_mb", (json_int_t)d->memory_mb));
    }
    return a;
}
