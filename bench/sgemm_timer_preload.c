/*
 * Where the CPU backend's GEMM time goes, without touching the backend: an LD_PRELOAD library
 * that wraps oneDNN's dnnl_sgemm, times every call and, at exit, prints to stderr one line per
 * (transposes, M, N, K) with calls, seconds and GFLOP/s, largest total first. Calls made inside
 * an OpenMP parallel region (the attention's per-block GEMMs) are pooled per transpose pair,
 * since their shapes vary with the block, and their time is thread-seconds.
 *
 *   LD_PRELOAD=build/bench/libsgemm-timer.so build/bin/lyre-bench-train --config ... --warmup 0
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <omp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef int (*sgemm_fn)(char, char, int64_t, int64_t, int64_t, float, const float*, int64_t,
                        const float*, int64_t, float, float*, int64_t);

enum { kMaxShapes = 1024 };

struct shape_time {
  char transa, transb;
  int nested; /* 1: called inside an OpenMP parallel region; M, N, K are then 0 (pooled) */
  int64_t M, N, K;
  long calls;
  double seconds, flop;
};

static struct shape_time shapes[kMaxShapes];
static int num_shapes;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static sgemm_fn real_sgemm;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static sgemm_fn find_real(void) {
  /* The backend plugin is dlopen'ed with its own libdnnl: look there, not in the global scope. */
  void* dnnl = dlopen("libdnnl.so.2", RTLD_NOW | RTLD_NOLOAD);
  sgemm_fn f = (sgemm_fn)dlsym(dnnl ? dnnl : RTLD_NEXT, "dnnl_sgemm");
  if (f == NULL) {
    fprintf(stderr, "sgemm-timer: dnnl_sgemm not found\n");
    abort();
  }
  return f;
}

int dnnl_sgemm(char transa, char transb, int64_t M, int64_t N, int64_t K, float alpha,
               const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
               int64_t ldc) {
  if (real_sgemm == NULL) real_sgemm = find_real(); /* same value from any thread */
  const int nested = omp_in_parallel();
  const double start = now();
  const int status = real_sgemm(transa, transb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  const double seconds = now() - start;
  const int64_t m = nested ? 0 : M, n = nested ? 0 : N, k = nested ? 0 : K;

  pthread_mutex_lock(&lock);
  int i = 0;
  while (i < num_shapes && !(shapes[i].transa == transa && shapes[i].transb == transb &&
                             shapes[i].nested == nested && shapes[i].M == m && shapes[i].N == n &&
                             shapes[i].K == k))
    ++i;
  if (i == num_shapes && num_shapes < kMaxShapes) {
    shapes[i] = (struct shape_time){transa, transb, nested, m, n, k, 0, 0.0, 0.0};
    ++num_shapes;
  }
  if (i < num_shapes) {
    shapes[i].calls += 1;
    shapes[i].seconds += seconds;
    shapes[i].flop += 2.0 * (double)M * (double)N * (double)K;
  }
  pthread_mutex_unlock(&lock);
  return status;
}

static int by_seconds_desc(const void* a, const void* b) {
  const double x = ((const struct shape_time*)a)->seconds, y = ((const struct shape_time*)b)->seconds;
  return x < y ? 1 : x > y ? -1 : 0;
}

__attribute__((destructor)) static void report(void) {
  if (num_shapes == 0) return;
  qsort(shapes, (size_t)num_shapes, sizeof shapes[0], by_seconds_desc);
  double top_level = 0, nested = 0;
  for (int i = 0; i < num_shapes; ++i) *(shapes[i].nested ? &nested : &top_level) += shapes[i].seconds;
  fprintf(stderr, "sgemm-timer: %.3f s in top-level calls, %.3f thread-s in calls inside parallel regions\n",
          top_level, nested);
  fprintf(stderr, "sgemm-timer: trans      M      N      K   calls   seconds  GFLOP/s\n");
  for (int i = 0; i < num_shapes; ++i) {
    const struct shape_time* s = &shapes[i];
    if (s->nested)
      fprintf(stderr, "sgemm-timer:   %c%c  (inside parallel regions) %7ld %9.3f %8.1f per thread\n",
              s->transa, s->transb, s->calls, s->seconds, s->flop / s->seconds / 1e9);
    else
      fprintf(stderr, "sgemm-timer:   %c%c %6ld %6ld %6ld %7ld %9.3f %8.1f\n", s->transa, s->transb,
              (long)s->M, (long)s->N, (long)s->K, s->calls, s->seconds, s->flop / s->seconds / 1e9);
  }
}
