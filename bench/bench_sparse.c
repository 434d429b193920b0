// SPDX-License-Identifier: MIT
/* bench_sparse -- zero activations skipped (issue 5): the demo bundle's real test images
 * through the engine with the input-sparse conv form on (act_skip AUTO) and off (dense), in
 * MIME mode (one engine, the three tasks' thresholds, batches mixing the tasks round-robin)
 * and conventional mode (each task's fine-tuned copy with ReLU, one engine per task, a batch
 * holds one task, the tasks in turn), batch 1 and 8, 1 and 2 threads, all in one process.
 *
 * Kernel part (--kernels): per conv layer of the demo net (conv2..conv4 shapes), the dense
 * packed GEMM (pack + microkernel + epilogue) against the input-sparse form (density pass +
 * lists + kernel + epilogue) on one sample's input with a given fraction of nonzeros, to
 * place the engine's density threshold.
 *
 * Every cell: the compared engines in turn within a round (order reversed every other
 * round), each running the same images; reported: median over rounds of ms per image and
 * the ratio off / on from the medians, plus each run's logits checked bit for bit between
 * on, off and ALWAYS (every chunk sparse).
 *
 *   bench_sparse [--bundle FILE] [--data DIR] [--images N] [--rounds N] [--kernels]
 *                [--sweep]
 *
 * --sweep adds the engine's density threshold swept at one thread (the default's choice).
 *
 * Images: the first N (default 300) test images of each task from DIR/<task>/
 * t10k-images-idx3-ubyte.gz (scripts/fetch-data.sh; default ~/.cache/mime/data), else the
 * bundle's PNG samples models/samples/<task>/ PNG files.
 * Ownership: everything is allocated and freed here. Threads: the engines' pools. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/bench_net.h"
#include "lib/bundle.h"
#include "lib/engine.h"
#include "lib/idx.h"
#include "lib/image.h"
#include "lib/model.h"

#define MAX_TASKS  8
#define MAX_ROUNDS 64

struct images {
	int n;               /* per task */
	float *x[MAX_TASKS]; /* [n, C, H, W] per task */
};

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (!p) {
		fprintf(stderr, "out of memory\n");
		exit(1);
	}
	return p;
}

static int load_idx(const char *dir, const char *task, const struct mime_input_spec *spec, int want,
                    float **ret, int *ret_n)
{
	char path[2048];
	struct mime_idx idx;
	struct mime_errinfo ei = {0};
	int n, side;
	float *px;

	snprintf(path, sizeof(path), "%s/%s/t10k-images-idx3-ubyte.gz", dir, task);
	if (mime_idx_read(path, &idx, &ei) < 0 || idx.ndim != 3)
		return -1;
	n = (int)idx.dims[0] < want ? (int)idx.dims[0] : want;
	side = (int)(idx.dims[1] * idx.dims[2]);
	px = xmalloc(sizeof(float) * side);
	*ret = xmalloc(sizeof(float) * spec->channels * spec->height * spec->width * n);
	for (int i = 0; i < n; i++) {
		struct mime_image img = {(int)idx.dims[2], (int)idx.dims[1], 1, px};

		for (int j = 0; j < side; j++)
			px[j] = idx.data[(size_t)i * side + j] / 255.0f;
		if (mime_image_preprocess(&img, spec,
		                          *ret + (size_t)i * spec->channels * spec->height *
		                                          spec->width,
		                          &ei) < 0) {
			fprintf(stderr, "preprocess: %s\n", ei.msg);
			exit(1);
		}
	}
	free(px);
	mime_idx_free(&idx);
	*ret_n = n;
	return 0;
}

static int load_pngs(const char *root, const char *task, const struct mime_input_spec *spec,
                     int want, float **ret, int *ret_n)
{
	char dir[1024], path[2048];
	DIR *d;
	struct dirent *de;
	int n = 0;
	const size_t sz = (size_t)spec->channels * spec->height * spec->width;

	snprintf(dir, sizeof(dir), "%s/models/samples/%s", root, task);
	d = opendir(dir);
	if (!d)
		return -1;
	*ret = xmalloc(sizeof(float) * sz * want);
	while (n < want && (de = readdir(d))) {
		struct mime_image img;
		struct mime_errinfo ei = {0};

		if (!strstr(de->d_name, ".png"))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (mime_image_load(path, &img, &ei) < 0)
			continue;
		if (mime_image_preprocess(&img, spec, *ret + sz * n, &ei) == 0)
			n++;
		mime_image_free(&img);
	}
	closedir(d);
	*ret_n = n;
	return n > 0 ? 0 : -1;
}

static const float *tensor(const struct mime_bundle *b, const char *name)
{
	struct mime_tensor_view v;

	if (mime_bundle_tensor(b, name, &v) < 0 || v.dtype != MIME_DTYPE_F32) {
		fprintf(stderr, "bundle: no F32 tensor %s\n", name);
		exit(1);
	}
	return v.data;
}

/* Task t's conventional baseline (as mimed's conventional mode builds it): the fine-tuned
 * weights and head, ReLU, one task. */
static void conv_model(const struct mime_bundle *b, const struct mime_model *mm, int t,
                       struct mime_model *m, struct mime_task_params *tp)
{
	const float *hw;
	char name[256];

	*m = *mm;
	*tp = mm->tasks[t];
	mime_task_relu(tp);
	snprintf(name, sizeof(name), "conventional/%s/head.weight", tp->name);
	hw = tensor(b, name);
	snprintf(name, sizeof(name), "conventional/%s/head.bias", tp->name);
	mime_task_set_head(tp, hw, tensor(b, name));
	for (int i = 0; i < mm->graph.n_layers; i++) {
		const struct mime_layer_spec *l = &mm->graph.layers[i];

		if (l->kind != MIME_LAYER_CONV && l->kind != MIME_LAYER_FC)
			continue;
		snprintf(name, sizeof(name), "conventional/%s/%s.weight", tp->name, l->name);
		m->weight[i] = tensor(b, name);
		snprintf(name, sizeof(name), "conventional/%s/%s.bias", tp->name, l->name);
		m->bias[i] = tensor(b, name);
	}
	m->tasks = tp;
	m->n_tasks = 1;
}

/* One way of serving: MIME (n_eng 1, every task in one engine) or conventional (one engine
 * per task), at a batch size, with skipping on or off. */
struct server {
	struct mime_engine *eng[MAX_TASKS];
	int n_eng;
};

struct setup {
	const struct images *im;
	int n_tasks, batch, sample_size, max_classes;
	float *in;     /* [batch, ...] staging */
	int *tasks;    /* [batch] */
	float *logits; /* [n_tasks * n images, max_classes] of the last run */
};

/* Runs every image once: MIME: batches of `batch` images mixing the tasks round-robin;
 * conventional: batches of one task, the tasks in turn. Logits go to s->logits in the
 * order image i of task t -> row t * n + i. Returns seconds. */
static double cpu_now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* CPU seconds of the last run_all (the process: every engine thread, spinning included). */
static double last_cpu_s;

static double run_all(struct setup *s, struct server *sv)
{
	const int n = s->im->n, T = s->n_tasks, B = s->batch;
	const double t0 = bench_now_s(), c0 = cpu_now_s();

	if (sv->n_eng == 1) {
		/* global index g = i * T + t: image i of task t */
		for (int g0 = 0; g0 < n * T; g0 += B) {
			const int nb = n * T - g0 < B ? n * T - g0 : B;
			struct mime_engine_result r;

			for (int b = 0; b < nb; b++) {
				const int g = g0 + b, t = g % T, i = g / T;

				memcpy(s->in + (size_t)b * s->sample_size,
				       s->im->x[t] + (size_t)i * s->sample_size,
				       sizeof(float) * s->sample_size);
				s->tasks[b] = t;
			}
			if (mime_engine_forward(sv->eng[0], nb, s->in, s->tasks, &r) < 0)
				exit(1);
			for (int b = 0; b < nb; b++) {
				const int g = g0 + b, t = g % T, i = g / T;

				memcpy(s->logits + ((size_t)t * n + i) * s->max_classes,
				       r.logits + (size_t)b * r.max_classes,
				       sizeof(float) * s->max_classes);
			}
		}
	} else {
		for (int i0 = 0; i0 < n; i0 += B) {
			const int nb = n - i0 < B ? n - i0 : B;

			for (int t = 0; t < T; t++) {
				struct mime_engine_result r;

				for (int b = 0; b < nb; b++)
					s->tasks[b] = 0;
				if (mime_engine_forward(sv->eng[t], nb,
				                        s->im->x[t] + (size_t)i0 * s->sample_size,
				                        s->tasks, &r) < 0)
					exit(1);
				for (int b = 0; b < nb; b++)
					memcpy(s->logits +
					               ((size_t)t * n + i0 + b) * s->max_classes,
					       r.logits + (size_t)b * r.max_classes,
					       sizeof(float) * s->max_classes);
			}
		}
	}
	last_cpu_s = cpu_now_s() - c0;
	return bench_now_s() - t0;
}

static void make_server(struct server *sv, int conventional, int n_tasks, struct mime_model *mm,
                        struct mime_model *cm, int batch, int threads, enum mime_act_skip skip,
                        float max_density)
{
	const struct mime_engine_config cfg = {.max_batch = batch,
	                                       .n_threads = threads,
	                                       .act_skip = skip,
	                                       .act_max_density = max_density};
	struct mime_errinfo ei = {0};

	sv->n_eng = conventional ? n_tasks : 1;
	for (int e = 0; e < sv->n_eng; e++)
		if (mime_engine_create(conventional ? &cm[e] : mm, &cfg, &sv->eng[e], &ei) < 0) {
			fprintf(stderr, "engine: %s\n", ei.msg);
			exit(1);
		}
}

static void free_server(struct server *sv)
{
	for (int e = 0; e < sv->n_eng; e++)
		mime_engine_destroy(sv->eng[e]);
}

/* Mean output sparsity per masked layer over every image (from the engine's zero counts). */
static void sparsity(struct setup *s, struct server *sv, int n_masked, double *ret)
{
	const int n = s->im->n, T = s->n_tasks;
	int64_t zeros[MIME_MAX_LAYERS] = {0}, neurons[MIME_MAX_LAYERS] = {0};

	for (int t = 0; t < T; t++)
		for (int i = 0; i < n; i++) {
			struct mime_engine_result r;
			struct mime_engine *e = sv->eng[sv->n_eng == 1 ? 0 : t];
			int task = sv->n_eng == 1 ? t : 0;

			if (mime_engine_forward(e, 1, s->im->x[t] + (size_t)i * s->sample_size,
			                        &task, &r) < 0)
				exit(1);
			for (int k = 0; k < n_masked; k++) {
				zeros[k] += r.zeros[k];
				neurons[k] += r.neurons[k];
			}
		}
	for (int k = 0; k < n_masked; k++)
		ret[k] = neurons[k] ? (double)zeros[k] / (double)neurons[k] : 0.0;
}

/* ---- kernels ---- */

static void kernels(const struct mime_model *mm, int rounds)
{
	const struct mime_graph *g = &mm->graph;
	struct mime_shape shapes[MIME_MAX_LAYERS], in = g->input;
	struct mime_errinfo ei = {0};
	static const double dens[] = {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0};
	const int n_dens = (int)(sizeof(dens) / sizeof(dens[0]));
	struct mime_gemm_arch a;
	uint64_t rng = 42;

	mime_gemm_arch_select(-1, &a);
	if (mime_graph_check(g, shapes, &ei) < 0)
		exit(1);
	printf("\n### Kernels: dense packed GEMM vs input-sparse form, one sample, %s\n\n", a.name);
	printf("us per sample (median of %d rounds), one chunk of all pixels; ratio = dense / "
	       "sparse (> 1: skipping pays)\n\n",
	       rounds);
	printf("| layer | C->K @ HxW | density |");
	printf(" dense us | sparse us | ratio |\n|---|---|---|---|---|---|\n");
	for (int i = 0; i < g->n_layers; i++) {
		const struct mime_layer_spec *l = &g->layers[i];
		struct mime_conv_geom geom;
		struct mime_gemm_weights w;
		struct mime_gemm_tweights tw;
		float *x, *xs, *wt, *bias, *out, *col;
		void *scratch;
		int CRS, P;

		if (l->kind != MIME_LAYER_CONV) {
			in = shapes[i];
			continue;
		}
		geom = (struct mime_conv_geom){in.c,        in.h,       in.w,      l->out,
		                               l->kernel,   l->kernel,  l->stride, l->pad,
		                               shapes[i].h, shapes[i].w};
		CRS = in.c * l->kernel * l->kernel;
		P = geom.oh * geom.ow;
		if (!mime_gemm_act_supported(&geom) || in.c == 1) {
			in = shapes[i];
			continue;
		}
		wt = bench_rand_array(&rng, (long)l->out * CRS, -0.1f, 0.1f);
		bias = bench_rand_array(&rng, l->out, 0.0f, 0.1f);
		x = bench_rand_array(&rng, (long)in.c * in.h * in.w, 0.0f, 1.0f);
		xs = xmalloc(sizeof(float) * in.c * in.h * in.w);
		out = xmalloc(sizeof(float) * l->out * P);
		col = xmalloc(sizeof(float) * mime_gemm_packed_b_floats(&a, CRS, P) + 64);
		col = (float *)(((uintptr_t)col + 63) & ~(uintptr_t)63);
		scratch = xmalloc(mime_gemm_act_scratch_bytes(&a, &geom, l->out) + 64);
		scratch = (void *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
		if (mime_gemm_weights_pack(&a, wt, l->out, CRS, 0, &w) < 0 ||
		    mime_gemm_tweights_init(&tw, l->out, CRS, l->kernel * l->kernel) < 0 ||
		    mime_gemm_tweights_build(&tw, &w) < 0)
			exit(1);
		for (int d = 0; d < n_dens; d++) {
			double td[MAX_ROUNDS], ts[MAX_ROUNDS];
			const int reps = 200;

			for (int j = 0; j < in.c * in.h * in.w; j++)
				xs[j] = x[j] < dens[d] ? x[j] : 0.0f;
			for (int r = 0; r < rounds; r++) {
				double t0 = bench_now_s();

				for (int q = 0; q < reps; q++) {
					mime_gemm_pack_b(&a, &geom, xs, 0, P, col);
					mime_gemm_conv(&a, &w, col, P, 0, P, bias,
					               &(struct mime_mask_ref){NULL, MIME_THR_NONE},
					               1, out);
				}
				td[r] = (bench_now_s() - t0) / reps * 1e6;
				t0 = bench_now_s();
				for (int q = 0; q < reps; q++) {
					mime_gemm_act_density(&a, &geom, xs, 0, P, scratch);
					mime_gemm_conv_act(
						&a, &tw, &geom, xs, 0, P, P, bias,
						&(struct mime_mask_ref){NULL, MIME_THR_NONE}, 1,
						out, scratch);
				}
				ts[r] = (bench_now_s() - t0) / reps * 1e6;
			}
			{
				const double md = bench_median(td, rounds),
					     ms = bench_median(ts, rounds);

				printf("| %s | %d->%d @ %dx%d | %.1f | %.1f | %.1f | %.2f |\n",
				       l->name, in.c, l->out, in.h, in.w, dens[d], md, ms, md / ms);
			}
		}
		mime_gemm_weights_free(&w);
		mime_gemm_tweights_free(&tw);
		free(wt);
		free(bias);
		free(x);
		free(xs);
		free(out);
		in = shapes[i];
	}
}

int main(int argc, char **argv)
{
	const char *bundle_path = "models/demo.mime", *data = NULL;
	char data_default[1024];
	int want = 300, rounds = 7, do_kernels = 0, do_sweep = 0;
	struct mime_bundle *b;
	struct mime_errinfo ei = {0};
	struct mime_model mm, cm[MAX_TASKS];
	struct mime_task_params ctp[MAX_TASKS];
	const struct mime_manifest *mf;
	struct images im = {0};
	static const int BATCH[] = {1, 8}, THREADS[] = {1, 2};
	double sp[2][MIME_MAX_LAYERS];
	int n_masked = 0, masked[MIME_MAX_LAYERS];

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--bundle") && i + 1 < argc)
			bundle_path = argv[++i];
		else if (!strcmp(argv[i], "--data") && i + 1 < argc)
			data = argv[++i];
		else if (!strcmp(argv[i], "--images") && i + 1 < argc)
			want = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
			rounds = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--kernels"))
			do_kernels = 1;
		else if (!strcmp(argv[i], "--sweep"))
			do_sweep = 1;
		else {
			fprintf(stderr, "usage: bench_sparse [--bundle FILE] [--data DIR] "
			                "[--images N] [--rounds N] [--kernels] [--sweep]\n");
			return 2;
		}
	}
	if (want < 1 || rounds < 1 || rounds > MAX_ROUNDS)
		return 2;
	if (!data) {
		snprintf(data_default, sizeof(data_default), "%s/.cache/mime/data",
		         getenv("HOME") ? getenv("HOME") : ".");
		data = data_default;
	}
	if (mime_bundle_open(bundle_path, &b, &ei) < 0 ||
	    mime_model_from_bundle(b, 0, &mm, &ei) < 0) {
		fprintf(stderr, "%s: %s\n", bundle_path, ei.msg);
		return 1;
	}
	mf = mime_bundle_manifest(b);
	if (mm.n_tasks > MAX_TASKS)
		return 1;
	for (int t = 0; t < mm.n_tasks; t++) {
		float *x = NULL;
		int n = 0;

		if (load_idx(data, mf->tasks[t].name, &mf->tasks[t].input, want, &x, &n) < 0 &&
		    load_pngs(".", mf->tasks[t].name, &mf->tasks[t].input, want, &x, &n) < 0) {
			fprintf(stderr, "no images for task %s\n", mf->tasks[t].name);
			return 1;
		}
		printf("task %s: %d images (%s)\n", mf->tasks[t].name, n,
		       n == want ? "test set" : "samples or short test set");
		im.x[t] = x;
		im.n = t == 0 || n < im.n ? n : im.n;
		conv_model(b, &mm, t, &cm[t], &ctp[t]);
	}
	if (do_kernels) {
		kernels(&mm, rounds);
		goto out;
	}
	{
		struct setup s = {.im = &im,
		                  .n_tasks = mm.n_tasks,
		                  .sample_size = (int)mime_shape_size(&mm.graph.input)};
		struct server sv;
		struct mime_engine_result r;

		/* max classes of either mode */
		make_server(&sv, 0, mm.n_tasks, &mm, cm, 1, 1, MIME_ACT_SKIP_AUTO, 0.0f);
		{
			int t0 = 0;

			mime_engine_forward(sv.eng[0], 1, im.x[0], &t0, &r);
			s.max_classes = r.max_classes;
			n_masked = r.n_masked;
			for (int k = 0; k < n_masked; k++)
				masked[k] = r.masked_layer[k];
		}
		sparsity(&s, &sv, n_masked, sp[0]);
		free_server(&sv);
		make_server(&sv, 1, mm.n_tasks, &mm, cm, 1, 1, MIME_ACT_SKIP_AUTO, 0.0f);
		sparsity(&s, &sv, n_masked, sp[1]);
		free_server(&sv);
		printf("\nmean output sparsity per masked layer over these images (the "
		       "engine's zero counts):\n\n| mode |");
		for (int k = 0; k < n_masked; k++)
			printf(" %s |", mm.graph.layers[masked[k]].name);
		printf("\n|---|");
		for (int k = 0; k < n_masked; k++)
			printf("---|");
		for (int mode = 0; mode < 2; mode++) {
			printf("\n| %s |", mode ? "conventional" : "MIME");
			for (int k = 0; k < n_masked; k++)
				printf(" %.3f |", sp[mode][k]);
		}
		printf("\n");
		s.in = xmalloc(sizeof(float) * s.sample_size * 8);
		s.tasks = xmalloc(sizeof(int) * 8);
		printf("\nms per image: median over %d rounds (each round runs every image once "
		       "in each of the four servers, in turn, the order reversed every other "
		       "round); speedup = dense / skip from the medians [from the minima]; "
		       "MIME vs conventional = conventional ms / MIME ms, skipping off and "
		       "on; the same ratios of the process CPU time (medians; every engine "
		       "thread, spinning included: steadier than wall time on a loaded "
		       "machine)\n\n",
		       rounds);
		printf("| batch | threads | MIME dense | MIME skip | MIME speedup | conv. dense | "
		       "conv. skip | conv. speedup | MIME vs conv., dense | MIME vs conv., skip | "
		       "CPU time: MIME speedup / conv. speedup / MIME vs conv. dense / skip | "
		       "bit-equal |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n");
		for (int bi = 0; bi < 2; bi++)
			for (int ti = 0; ti < 2; ti++) {
				const int B = BATCH[bi], T = THREADS[ti];
				/* 0 MIME dense, 1 MIME skip, 2 conv dense, 3 conv skip */
				struct server sv4[4], always;
				const size_t nl = (size_t)mm.n_tasks * im.n * s.max_classes;
				float *lg[3];
				double tm[4][MAX_ROUNDS], cpu[4][MAX_ROUNDS], med[4], mn[4], mc[4];
				int same = 1;

				s.batch = B;
				for (int q = 0; q < 4; q++)
					make_server(&sv4[q], q >= 2, mm.n_tasks, &mm, cm, B, T,
					            q & 1 ? MIME_ACT_SKIP_AUTO : MIME_ACT_SKIP_OFF,
					            0.0f);
				/* bit for bit: dense, auto and always, in each mode */
				for (int mode = 0; mode < 2; mode++) {
					make_server(&always, mode, mm.n_tasks, &mm, cm, B, T,
					            MIME_ACT_SKIP_ALWAYS, 0.0f);
					for (int q = 0; q < 3; q++) {
						lg[q] = xmalloc(sizeof(float) * nl);
						s.logits = lg[q];
						run_all(&s, q == 2 ? &always : &sv4[2 * mode + q]);
					}
					same &= !memcmp(lg[0], lg[1], sizeof(float) * nl) &&
					        !memcmp(lg[0], lg[2], sizeof(float) * nl);
					free(lg[1]);
					free(lg[2]);
					free_server(&always);
					s.logits = lg[0];
				}
				for (int rr = 0; rr < rounds; rr++)
					for (int q0 = 0; q0 < 4; q0++) {
						const int q = rr & 1 ? 3 - q0 : q0;

						tm[q][rr] = run_all(&s, &sv4[q]);
						cpu[q][rr] = last_cpu_s;
					}
				for (int q = 0; q < 4; q++) {
					const double imgs = (double)mm.n_tasks * im.n;

					mn[q] = tm[q][0];
					for (int rr = 1; rr < rounds; rr++)
						mn[q] = tm[q][rr] < mn[q] ? tm[q][rr] : mn[q];
					med[q] = bench_median(tm[q], rounds) / imgs * 1e3;
					mn[q] = mn[q] / imgs * 1e3;
					mc[q] = bench_median(cpu[q], rounds) / imgs * 1e3;
				}
				printf("| %d | %d | %.4f | %.4f | %.2fx [%.2fx] | %.4f | %.4f | "
				       "%.2fx "
				       "[%.2fx] | %.2fx | %.2fx | %.2fx / %.2fx / %.2fx / %.2fx | "
				       "%s "
				       "|\n",
				       B, T, med[0], med[1], med[0] / med[1], mn[0] / mn[1], med[2],
				       med[3], med[2] / med[3], mn[2] / mn[3], med[2] / med[0],
				       med[3] / med[1], mc[0] / mc[1], mc[2] / mc[3], mc[2] / mc[0],
				       mc[3] / mc[1], same ? "yes" : "NO");
				fflush(stdout);
				free(lg[0]);
				for (int q = 0; q < 4; q++)
					free_server(&sv4[q]);
			}
		if (do_sweep) {
			static const float TH[] = {0.25f, 0.5f, 0.75f, 1.0f};

			printf("\nThreshold sweep (act_max_density; 1 = every chunk): speedup "
			       "over dense in CPU time, medians of %d rounds\n\n| mode | batch | "
			       "threads |",
			       rounds);
			for (int k = 0; k < 4; k++)
				printf(" %.2f |", TH[k]);
			printf("\n|---|---|---|---|---|---|---|\n");
			for (int mode = 0; mode < 2; mode++)
				for (int bi = 0; bi < 2; bi++) {
					struct server v[5];
					double tm[5][MAX_ROUNDS];
					float *lgs = xmalloc(sizeof(float) * (size_t)mm.n_tasks *
					                     im.n * s.max_classes);

					s.batch = BATCH[bi];
					s.logits = lgs;
					make_server(&v[0], mode, mm.n_tasks, &mm, cm, BATCH[bi], 1,
					            MIME_ACT_SKIP_OFF, 0.0f);
					for (int k = 0; k < 4; k++)
						make_server(&v[k + 1], mode, mm.n_tasks, &mm, cm,
						            BATCH[bi], 1, MIME_ACT_SKIP_AUTO,
						            TH[k]);
					for (int rr = 0; rr < rounds; rr++)
						for (int q0 = 0; q0 < 5; q0++) {
							const int q = rr & 1 ? 4 - q0 : q0;

							run_all(&s, &v[q]);
							tm[q][rr] = last_cpu_s;
						}
					printf("| %s | %d | 1 |", mode ? "conventional" : "MIME",
					       BATCH[bi]);
					{
						const double d = bench_median(tm[0], rounds);

						for (int k = 0; k < 4; k++)
							printf(" %.2fx |",
							       d / bench_median(tm[k + 1], rounds));
					}
					printf("\n");
					fflush(stdout);
					for (int q = 0; q < 5; q++)
						free_server(&v[q]);
					free(lgs);
				}
		}
		free(s.in);
		free(s.tasks);
	}
out:
	for (int t = 0; t < mm.n_tasks; t++)
		free(im.x[t]);
	mime_model_fini(&mm);
	mime_bundle_close(b);
	return 0;
}
