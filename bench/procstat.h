/*
 * procstat.h: the clocks and the /proc figures both load generators (loadgen.c, udpload.c) take at the
 * edges of their measured window: their own CPU time, a server's CPU time, and the time either spent
 * runnable but waiting for a CPU.
 */
#ifndef ECHOD_BENCH_PROCSTAT_H
#define ECHOD_BENCH_PROCSTAT_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + ts.tv_nsec;
}

static inline double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* Time the main thread of `pid` ("self" for this one) waited, runnable, for a CPU: the second field of
 * /proc/PID/schedstat. Time lost to other processes, which a shared machine has plenty of. */
static inline double runq_wait_seconds(const char *pid)
{
    char path[64];
    unsigned long long run = 0, wait = 0;
    snprintf(path, sizeof path, "/proc/%s/schedstat", pid);
    FILE *f = fopen(path, "r");
    if (f) {
        if (fscanf(f, "%llu %llu", &run, &wait) != 2)
            wait = 0;
        fclose(f);
    }
    return wait / 1e9;
}

/* User plus system CPU time of every thread of process `pid`: fields 14 and 15 of /proc/PID/stat. */
static inline double process_cpu_seconds(const char *pid)
{
    char path[64], buf[1024];
    unsigned long long utime = 0, stime = 0;
    snprintf(path, sizeof path, "/proc/%s/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* the command name may contain spaces */
    if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
        utime = stime = 0;
    return (double)(utime + stime) / sysconf(_SC_CLK_TCK);
}

/* Either figure summed over a comma-separated list of pids: a server may be several processes. */
static inline double over_pids(const char *pids, double (*figure)(const char *))
{
    char copy[256], *save = NULL;
    double total = 0;
    snprintf(copy, sizeof copy, "%s", pids);
    for (char *pid = strtok_r(copy, ",", &save); pid; pid = strtok_r(NULL, ",", &save))
        total += figure(pid);
    return total;
}

#endif
