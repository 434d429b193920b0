// SPDX-License-Identifier: MIT
/* cmd_parent -- `mime-train parent`: trains the parent network (a graph plus one
 * classifier head) on an IDX dataset, evaluates it on the test set every epoch, keeps a
 * checkpoint, and writes a bundle with BatchNorm folded into the conv weights.
 *
 * Checkpoint layout (native byte order; only this program reads it back):
 *   0   8  magic "MIMECKP1"
 *   8   8  fingerprint of everything a resumed run must share (graph, seed, threads, batch,
 *          optimizer, schedule, epochs, data limits, augmentation)
 *   16  4  epochs completed          20  4  reserved (0)
 *   24  8  training seconds so far (double)
 *   32 32  reserved (0)
 *   64 ..  the net's params and BatchNorm statistics (mimetrain_net_save), then the
 *          optimizer's step and state (mimetrain_optim_save).
 * Every epoch's shuffle and augmentation draws come from generators derived from (seed,
 * epoch), so a run resumed from a checkpoint continues bit-identically.
 *
 * Ownership: everything is released before returning.
 * Threads: the caller's thread, the net's worker threads and OpenBLAS' pool (set to
 * --threads). */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cblas.h>

#include "lib/bundle.h"
#include "lib/manifest.h"
#include "train/cmd.h"
#include "train/data.h"
#include "train/net.h"
#include "train/optim.h"

#if __has_include("train/graphyaml.h")
#include "train/graphyaml.h"
#define HAVE_GRAPHYAML 1
#endif

#define CKPT_MAGIC      "MIMECKP1"
#define CKPT_HEADER_LEN 64
#define N_CLASSES       10

static const char *const fmnist_classes[N_CLASSES] = {
	"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
	"Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot",
};

struct parent_opts {
	char data_dir[PATH_MAX];
	const char *graph_path;
	int width_div;
	int epochs, batch, threads, train_limit, test_limit;
	uint64_t seed;
	struct mimetrain_optim_config optim;
	float warmup_epochs;
	int batchnorm;
	struct mimetrain_augment aug;
	const char *checkpoint, *out;
	int resume;
	int stop_after; /* stop after this many epochs of this invocation; 0 = run to the end */
};

struct ckpt_header {
	uint64_t fingerprint;
	int32_t epochs_done;
	double train_seconds;
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: mime-train parent [OPTIONS] -o OUT.mime\n"
	           "\n"
	           "Trains the parent network on Fashion-MNIST (IDX files) and writes a bundle.\n"
	           "\n"
	           "  --data DIR          train-/t10k-{images-idx3,labels-idx1}-ubyte[.gz]\n"
	           "                      (default ${MIME_DATA:-$HOME/.cache/mime/data}/fmnist)\n"
	           "  --graph FILE        network graph (YAML)\n"
	           "  --width full|half   built-in VGG-7 (default full)\n"
	           "  --epochs N          (default 30)        --batch B   (default 128)\n"
	           "  --optimizer sgd|adam (default sgd)     --lr LR     (default 0.1 sgd, 1e-3 "
	           "adam)\n"
	           "  --momentum M        (default 0.9)       --no-nesterov\n"
	           "  --wd WD             weight decay on conv/fc weights (default 5e-4)\n"
	           "  --schedule cosine|step|constant (default cosine)\n"
	           "  --warmup EPOCHS     linear warm-up (default 1)\n"
	           "  --step-epochs N --step-gamma G   step schedule (default 10, 0.1)\n"
	           "  --no-bn             no BatchNorm after the convs\n"
	           "  --pad P             random shift augmentation (default 2; 0 = off)\n"
	           "  --no-hflip          no horizontal flips\n"
	           "  --seed S            (default 1)         --threads T (default 2)\n"
	           "  --train-limit N --test-limit N           use the first N samples only\n"
	           "  --checkpoint FILE   saved after every epoch\n"
	           "  --resume            continue from --checkpoint when it exists\n"
	           "  -o, --output FILE   the bundle to write\n");
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
	const unsigned char *b = p;

	for (size_t i = 0; i < n; i++) {
		h ^= b[i];
		h *= 0x100000001B3ull;
	}
	return h;
}

static uint64_t run_fingerprint(const struct parent_opts *o, const struct mime_graph *g)
{
	uint64_t h = 0xCBF29CE484222325ull;
	int32_t v[] = {o->epochs,
	               o->batch,
	               o->threads,
	               o->train_limit,
	               o->batchnorm,
	               o->aug.pad,
	               o->aug.hflip,
	               (int32_t)o->optim.kind,
	               o->optim.nesterov,
	               (int32_t)o->optim.schedule,
	               (int32_t)o->optim.warmup_steps,
	               (int32_t)o->optim.step_every};
	float fl[] = {o->optim.lr, o->optim.momentum, o->optim.weight_decay, o->optim.step_gamma};

	h = fnv(h, &o->seed, sizeof(o->seed));
	h = fnv(h, v, sizeof(v));
	h = fnv(h, fl, sizeof(fl));
	h = fnv(h, &g->input, sizeof(g->input));
	for (int i = 0; i < g->n_layers; i++) {
		const struct mime_layer_spec *l = &g->layers[i];
		int32_t lv[] = {(int32_t)l->kind, l->out, l->kernel,
		                l->stride,        l->pad, (int32_t)l->act};

		h = fnv(h, lv, sizeof(lv));
		h = fnv(h, l->name, strnlen(l->name, sizeof(l->name)));
	}
	return h;
}

static int ckpt_write(const char *path, const struct ckpt_header *hd,
                      const struct mimetrain_net *net, const struct mimetrain_optim *opt)
{
	unsigned char hdr[CKPT_HEADER_LEN] = {0};
	char *tmp;
	FILE *f;
	int r;

	memcpy(hdr, CKPT_MAGIC, 8);
	memcpy(hdr + 8, &hd->fingerprint, 8);
	memcpy(hdr + 16, &hd->epochs_done, 4);
	memcpy(hdr + 24, &hd->train_seconds, 8);
	if (asprintf(&tmp, "%s.tmp", path) < 0)
		return -ENOMEM;
	f = fopen(tmp, "wb");
	if (!f) {
		r = -errno;
		goto out_free;
	}
	r = fwrite(hdr, sizeof(hdr), 1, f) == 1 ? 0 : -EIO;
	if (r == 0)
		r = mimetrain_net_save(net, f);
	if (r == 0)
		r = mimetrain_optim_save(opt, f);
	if (fflush(f) != 0 && r == 0)
		r = -errno;
	if (r == 0 && fsync(fileno(f)) < 0)
		r = -errno;
	if (fclose(f) != 0 && r == 0)
		r = -errno;
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0)
		unlink(tmp);
out_free:
	free(tmp);
	return r;
}

static int ckpt_read(const char *path, struct ckpt_header *hd, struct mimetrain_net *net,
                     struct mimetrain_optim *opt, struct mime_errinfo *ei)
{
	unsigned char hdr[CKPT_HEADER_LEN];
	FILE *f;
	int r;

	f = fopen(path, "rb");
	if (!f)
		return mime_errinfo_set(ei, -errno, "checkpoint '%s': %s", path, strerror(errno));
	if (fread(hdr, sizeof(hdr), 1, f) != 1 || memcmp(hdr, CKPT_MAGIC, 8) != 0) {
		r = mime_errinfo_set(ei, MIME_EFORMAT, "checkpoint '%s': not a checkpoint", path);
		goto out_close;
	}
	memcpy(&hd->fingerprint, hdr + 8, 8);
	memcpy(&hd->epochs_done, hdr + 16, 4);
	memcpy(&hd->train_seconds, hdr + 24, 8);
	r = mimetrain_net_load(net, f, ei);
	if (r == 0)
		r = mimetrain_optim_load(opt, f, ei);
out_close:
	fclose(f);
	return r;
}

/* Accuracy of the net (eval mode) on d, in chunks of max_batch. */
static double evaluate(struct mimetrain_net *net, const struct mimetrain_data *d, int batch,
                       float mean, float std, float *x, uint8_t *y, int *idx)
{
	long correct = 0;

	for (int s = 0; s < d->n; s += batch) {
		int n = d->n - s < batch ? d->n - s : batch, c;

		for (int i = 0; i < n; i++)
			idx[i] = s + i;
		mimetrain_data_batch(d, idx, n, mean, std, NULL, NULL, x, y);
		mimetrain_net_forward(net, x, n, 0);
		mimetrain_net_loss(net, y, &c);
		correct += c;
	}
	return d->n ? (double)correct / d->n : 0.0;
}

static int load_split(const char *dir, const char *prefix, int limit, struct mimetrain_data *d,
                      struct mime_errinfo *ei)
{
	char im[PATH_MAX + 64], lb[PATH_MAX + 64];
	struct stat st;

	snprintf(im, sizeof(im), "%s/%s-images-idx3-ubyte.gz", dir, prefix);
	snprintf(lb, sizeof(lb), "%s/%s-labels-idx1-ubyte.gz", dir, prefix);
	if (stat(im, &st) < 0) { /* fall back to uncompressed files */
		snprintf(im, sizeof(im), "%s/%s-images-idx3-ubyte", dir, prefix);
		snprintf(lb, sizeof(lb), "%s/%s-labels-idx1-ubyte", dir, prefix);
	}
	return mimetrain_data_load(im, lb, N_CLASSES, limit, d, ei);
}

static void progress(int epoch, int epochs, long done, long total, double t0, double loss,
                     double rest_s)
{
	double el = now_s() - t0, ips = el > 0 ? done / el : 0;
	double eta = ips > 0 ? (total - done) / ips + rest_s : 0;
	char bar[31];
	int fill = total ? (int)(30 * done / total) : 0;

	for (int i = 0; i < 30; i++)
		bar[i] = i < fill ? '#' : '.';
	bar[30] = '\0';
	fprintf(stderr, "\repoch %d/%d [%s] %3d%% %6.0f img/s  ETA %dm%02ds  loss %.4f ", epoch,
	        epochs, bar, total ? (int)(100 * done / total) : 0, ips, (int)eta / 60,
	        (int)eta % 60, loss);
	fflush(stderr);
}

static char *provenance(int argc, char **argv, const struct parent_opts *o, double train_s,
                        int epochs_done, double acc, float mean, float std)
{
	json_t *p = json_object(), *cmd = json_array();
	char date[64], *s;
	time_t t = time(NULL);
	struct tm tm;

	if (!p || !cmd) {
		json_decref(p);
		json_decref(cmd);
		return NULL;
	}
	gmtime_r(&t, &tm);
	strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", &tm);
	json_array_append_new(cmd, json_string("mime-train"));
	for (int i = 0; i < argc; i++)
		json_array_append_new(cmd, json_string(argv[i]));
	json_object_set_new(p, "tool", json_string("mime-train parent"));
	json_object_set_new(p, "command", cmd);
	json_object_set_new(p, "seed", json_integer((json_int_t)o->seed));
	json_object_set_new(p, "threads", json_integer(o->threads));
	json_object_set_new(p, "data", json_string(o->data_dir));
	json_object_set_new(p, "date", json_string(date));
	json_object_set_new(p, "epochs", json_integer(epochs_done));
	json_object_set_new(p, "batch", json_integer(o->batch));
	json_object_set_new(p, "optimizer",
	                    json_string(o->optim.kind == MIMETRAIN_SGD ? "sgd" : "adam"));
	json_object_set_new(p, "lr", json_real(o->optim.lr));
	json_object_set_new(p, "weight_decay", json_real(o->optim.weight_decay));
	json_object_set_new(p, "batchnorm", json_string(o->batchnorm ? "folded" : "none"));
	json_object_set_new(p, "augment_pad", json_integer(o->aug.pad));
	json_object_set_new(p, "augment_hflip", json_boolean(o->aug.hflip));
	json_object_set_new(p, "train_seconds", json_real(round(train_s * 10) / 10));
	json_object_set_new(p, "test_accuracy", json_real(acc));
	json_object_set_new(p, "norm_mean", json_real(mean));
	json_object_set_new(p, "norm_std", json_real(std));
	s = json_dumps(p, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
	json_decref(p);
	return s;
}

/* Folds BatchNorm and writes the bundle. */
static int write_bundle(const char *path, struct mimetrain_net *net, float mean, float std,
                        double acc, char *prov, struct mime_errinfo *ei)
{
	const struct mime_graph *g = mimetrain_net_graph(net);
	struct mime_shape shapes[MIME_MAX_LAYERS];
	struct mime_bundle_writer *w = NULL;
	struct mime_manifest m;
	struct mime_task_spec task;
	const float *hw, *hb;
	float *fw = NULL, *fb = NULL;
	int r;

	memset(&m, 0, sizeof(m));
	memset(&task, 0, sizeof(task));
	r = mime_graph_check(g, shapes, ei);
	if (r < 0)
		return r;
	r = mime_bundle_writer_create(&w);
	if (r < 0)
		return r;
	for (int i = 0; i < g->n_layers; i++) {
		const struct mime_layer_spec *l = &g->layers[i];
		const struct mime_shape *in = i ? &shapes[i - 1] : &g->input;
		int64_t shape[4], bshape[1] = {l->out};
		char name[MIME_NAME_MAX + 32];
		long nw;

		if (l->kind != MIME_LAYER_CONV && l->kind != MIME_LAYER_FC)
			continue;
		nw = mime_graph_layer_params(l, in) - l->out;
		fw = malloc(sizeof(float) * nw);
		fb = malloc(sizeof(float) * l->out);
		if (!fw || !fb) {
			r = -ENOMEM;
			goto out;
		}
		mimetrain_net_folded(net, i, fw, fb);
		shape[0] = l->out;
		if (l->kind == MIME_LAYER_CONV) {
			shape[1] = in->c;
			shape[2] = shape[3] = l->kernel;
		} else {
			shape[1] = mime_shape_size(in);
		}
		snprintf(name, sizeof(name), "parent/%s.weight", l->name);
		r = mime_bundle_writer_add(w, name, MIME_DTYPE_F32,
		                           l->kind == MIME_LAYER_CONV ? 4 : 2, shape, fw);
		if (r < 0)
			goto out;
		snprintf(name, sizeof(name), "parent/%s.bias", l->name);
		r = mime_bundle_writer_add(w, name, MIME_DTYPE_F32, 1, bshape, fb);
		if (r < 0)
			goto out;
		free(fw);
		free(fb);
		fw = fb = NULL;
	}
	mimetrain_net_head(net, &hw, &hb);
	{
		int64_t shape[2] = {N_CLASSES, mimetrain_net_features(net)},
			bshape[1] = {N_CLASSES};

		r = mime_bundle_writer_add(w, "task/fmnist/head.weight", MIME_DTYPE_F32, 2, shape,
		                           hw);
		if (r == 0)
			r = mime_bundle_writer_add(w, "task/fmnist/head.bias", MIME_DTYPE_F32, 1,
			                           bshape, hb);
		if (r < 0)
			goto out;
	}
	snprintf(task.name, sizeof(task.name), "fmnist");
	task.n_classes = N_CLASSES;
	task.class_names = (char **)fmnist_classes;
	mime_input_spec_default(g, &task.input);
	task.input.fit = MIME_FIT_STRETCH;
	task.input.invert = 0;
	for (int c = 0; c < 3; c++) {
		task.input.mean[c] = mean;
		task.input.std[c] = std;
	}
	task.thresholds = MIME_THR_NONE;
	task.accuracy = acc;
	m.graph = *g;
	m.n_tasks = 1;
	m.tasks = &task;
	m.provenance_json = prov;
	r = mime_bundle_writer_write(w, &m, path, ei);
out:
	free(fw);
	free(fb);
	mime_bundle_writer_destroy(w);
	return r;
}

static int parse_opts(int argc, char **argv, struct parent_opts *o)
{
	enum {
		O_DATA = 256,
		O_GRAPH,
		O_WIDTH,
		O_EPOCHS,
		O_BATCH,
		O_LR,
		O_OPT,
		O_MOM,
		O_NONEST,
		O_WD,
		O_SCHED,
		O_WARMUP,
		O_STEPEP,
		O_STEPG,
		O_NOBN,
		O_PAD,
		O_NOFLIP,
		O_SEED,
		O_THREADS,
		O_TRLIM,
		O_TELIM,
		O_CKPT,
		O_RESUME,
		O_STOP,
	};
	static const struct option longopts[] = {
		{"data", required_argument, NULL, O_DATA},
		{"graph", required_argument, NULL, O_GRAPH},
		{"width", required_argument, NULL, O_WIDTH},
		{"epochs", required_argument, NULL, O_EPOCHS},
		{"batch", required_argument, NULL, O_BATCH},
		{"lr", required_argument, NULL, O_LR},
		{"optimizer", required_argument, NULL, O_OPT},
		{"momentum", required_argument, NULL, O_MOM},
		{"no-nesterov", no_argument, NULL, O_NONEST},
		{"wd", required_argument, NULL, O_WD},
		{"schedule", required_argument, NULL, O_SCHED},
		{"warmup", required_argument, NULL, O_WARMUP},
		{"step-epochs", required_argument, NULL, O_STEPEP},
		{"step-gamma", required_argument, NULL, O_STEPG},
		{"no-bn", no_argument, NULL, O_NOBN},
		{"pad", required_argument, NULL, O_PAD},
		{"no-hflip", no_argument, NULL, O_NOFLIP},
		{"seed", required_argument, NULL, O_SEED},
		{"threads", required_argument, NULL, O_THREADS},
		{"train-limit", required_argument, NULL, O_TRLIM},
		{"test-limit", required_argument, NULL, O_TELIM},
		{"checkpoint", required_argument, NULL, O_CKPT},
		{"resume", no_argument, NULL, O_RESUME},
		{"stop-after", required_argument, NULL, O_STOP},
		{"output", required_argument, NULL, 'o'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	const char *env = getenv("MIME_DATA"), *home = getenv("HOME");
	float lr = -1;
	int c, step_epochs = 10;
	char *end;

	memset(o, 0, sizeof(*o));
	if (env && *env)
		snprintf(o->data_dir, sizeof(o->data_dir), "%s/fmnist", env);
	else
		snprintf(o->data_dir, sizeof(o->data_dir), "%s/.cache/mime/data/fmnist",
		         home ? home : ".");
	o->width_div = 1;
	o->epochs = 30;
	o->batch = 128;
	o->threads = 2;
	o->seed = 1;
	o->optim.kind = MIMETRAIN_SGD;
	o->optim.momentum = 0.9f;
	o->optim.nesterov = 1;
	o->optim.weight_decay = 5e-4f;
	o->optim.schedule = MIMETRAIN_LR_COSINE;
	o->optim.step_gamma = 0.1f;
	o->warmup_epochs = 1;
	o->batchnorm = 1;
	o->aug.pad = 2;
	o->aug.hflip = 1;

	optind = 1;
	while ((c = getopt_long(argc, argv, "o:h", longopts, NULL)) != -1) {
		errno = 0;
		end = NULL;
		switch (c) {
		case O_DATA:
			snprintf(o->data_dir, sizeof(o->data_dir), "%s", optarg);
			break;
		case O_GRAPH:
			o->graph_path = optarg;
			break;
		case O_WIDTH:
			if (strcmp(optarg, "full") == 0)
				o->width_div = 1;
			else if (strcmp(optarg, "half") == 0)
				o->width_div = 2;
			else
				goto bad;
			break;
		case O_EPOCHS:
			o->epochs = (int)strtol(optarg, &end, 10);
			if (o->epochs <= 0 || o->epochs > 10000)
				goto bad;
			break;
		case O_BATCH:
			o->batch = (int)strtol(optarg, &end, 10);
			if (o->batch <= 1 || o->batch > 65536)
				goto bad;
			break;
		case O_LR:
			lr = strtof(optarg, &end);
			if (!(lr > 0))
				goto bad;
			break;
		case O_OPT:
			if (strcmp(optarg, "sgd") == 0)
				o->optim.kind = MIMETRAIN_SGD;
			else if (strcmp(optarg, "adam") == 0)
				o->optim.kind = MIMETRAIN_ADAM;
			else
				goto bad;
			break;
		case O_MOM:
			o->optim.momentum = strtof(optarg, &end);
			break;
		case O_NONEST:
			o->optim.nesterov = 0;
			break;
		case O_WD:
			o->optim.weight_decay = strtof(optarg, &end);
			break;
		case O_SCHED:
			if (strcmp(optarg, "cosine") == 0)
				o->optim.schedule = MIMETRAIN_LR_COSINE;
			else if (strcmp(optarg, "step") == 0)
				o->optim.schedule = MIMETRAIN_LR_STEP;
			else if (strcmp(optarg, "constant") == 0)
				o->optim.schedule = MIMETRAIN_LR_CONSTANT;
			else
				goto bad;
			break;
		case O_WARMUP:
			o->warmup_epochs = strtof(optarg, &end);
			if (o->warmup_epochs < 0)
				goto bad;
			break;
		case O_STEPEP:
			step_epochs = (int)strtol(optarg, &end, 10);
			if (step_epochs <= 0)
				goto bad;
			break;
		case O_STEPG:
			o->optim.step_gamma = strtof(optarg, &end);
			break;
		case O_NOBN:
			o->batchnorm = 0;
			break;
		case O_PAD:
			o->aug.pad = (int)strtol(optarg, &end, 10);
			if (o->aug.pad < 0 || o->aug.pad > 8)
				goto bad;
			break;
		case O_NOFLIP:
			o->aug.hflip = 0;
			break;
		case O_SEED:
			o->seed = strtoull(optarg, &end, 0);
			break;
		case O_THREADS:
			o->threads = (int)strtol(optarg, &end, 10);
			if (o->threads <= 0 || o->threads > 256)
				goto bad;
			break;
		case O_TRLIM:
			o->train_limit = (int)strtol(optarg, &end, 10);
			if (o->train_limit < 0)
				goto bad;
			break;
		case O_TELIM:
			o->test_limit = (int)strtol(optarg, &end, 10);
			if (o->test_limit < 0)
				goto bad;
			break;
		case O_CKPT:
			o->checkpoint = optarg;
			break;
		case O_RESUME:
			o->resume = 1;
			break;
		case O_STOP:
			o->stop_after = (int)strtol(optarg, &end, 10);
			if (o->stop_after < 0)
				goto bad;
			break;
		case 'o':
			o->out = optarg;
			break;
		case 'h':
			usage(stdout);
			return 1;
		default:
			usage(stderr);
			return -1;
		}
		if (end && (*end != '\0' || errno != 0))
			goto bad;
	}
	if (optind != argc || !o->out) {
		fprintf(stderr, "mime-train parent: %s\n",
		        !o->out ? "-o OUT.mime is required" : "unexpected argument");
		usage(stderr);
		return -1;
	}
	if ((o->resume || o->stop_after) && !o->checkpoint) {
		fprintf(stderr, "mime-train parent: --resume and --stop-after need --checkpoint\n");
		return -1;
	}
	o->optim.lr = lr > 0 ? lr : (o->optim.kind == MIMETRAIN_SGD ? 0.1f : 1e-3f);
	o->optim.step_every = step_epochs; /* in epochs until the step count is known */
	return 0;
bad:
	fprintf(stderr, "mime-train parent: bad value '%s' for --%s\n", optarg,
	        longopts[c == 'o' ? 0 : c - 256].name);
	return -1;
}

int mimetrain_cmd_parent(int argc, char **argv)
{
	struct parent_opts o;
	struct mime_errinfo ei = {0};
	struct mime_graph g;
	struct mimetrain_data train = {0}, test = {0};
	struct mimetrain_net *net = NULL;
	struct mimetrain_optim *opt = NULL;
	struct mimetrain_param *params;
	struct ckpt_header hd = {0};
	float mean, std, *x = NULL;
	uint8_t *y = NULL;
	int *perm = NULL, *idx = NULL, n_params, steps_per_epoch, start_epoch = 0, tty, r, ret = 1;
	double acc = 0, t_train = 0;
	char *prov = NULL;

	r = parse_opts(argc, argv, &o);
	if (r != 0)
		return r > 0 ? 0 : 2;
	tty = isatty(STDERR_FILENO);

	if (o.graph_path) {
#ifdef HAVE_GRAPHYAML
		struct mimetrain_netdesc desc;

		r = mimetrain_graphyaml_load(o.graph_path, &desc, &ei);
		if (r < 0) {
			fprintf(stderr, "mime-train parent: %s: %s\n", mime_strerror(r), ei.msg);
			return 1;
		}
		g = desc.graph;
		mimetrain_netdesc_free(&desc);
#else
		fprintf(stderr, "mime-train parent: --graph is not supported in this build\n");
		return 1;
#endif
	} else {
		mimetrain_graph_vgg7(o.width_div, &g);
	}

	r = load_split(o.data_dir, "train", o.train_limit, &train, &ei);
	if (r == 0)
		r = load_split(o.data_dir, "t10k", o.test_limit, &test, &ei);
	if (r < 0) {
		fprintf(stderr, "mime-train parent: %s: %s\n", mime_strerror(r), ei.msg);
		goto out;
	}
	if (train.c != g.input.c || train.h != g.input.h || train.w != g.input.w ||
	    test.c != g.input.c || test.h != g.input.h || test.w != g.input.w) {
		fprintf(stderr, "mime-train parent: data is %dx%dx%d, the graph wants %dx%dx%d\n",
		        train.c, train.h, train.w, g.input.c, g.input.h, g.input.w);
		goto out;
	}
	if (train.n < o.batch) {
		fprintf(stderr, "mime-train parent: %d training images, fewer than a batch\n",
		        train.n);
		goto out;
	}
	mimetrain_data_stats(&train, &mean, &std);
	steps_per_epoch = train.n / o.batch; /* the last partial batch is dropped */
	o.optim.total_steps = (long)steps_per_epoch * o.epochs;
	o.optim.warmup_steps = (long)(o.warmup_epochs * steps_per_epoch);
	o.optim.step_every *= steps_per_epoch;
	o.optim.lr_min = 0;

	openblas_set_num_threads(o.threads);
	{
		struct mimetrain_net_config nc = {.n_classes = N_CLASSES,
		                                  .batchnorm = o.batchnorm,
		                                  .max_batch = o.batch,
		                                  .threads = o.threads,
		                                  .seed = o.seed};

		r = mimetrain_net_create(&g, &nc, &net, &ei);
	}
	if (r < 0) {
		fprintf(stderr, "mime-train parent: %s: %s\n", mime_strerror(r), ei.msg);
		goto out;
	}
	params = mimetrain_net_params(net, &n_params);
	r = mimetrain_optim_create(&o.optim, params, n_params, &opt, &ei);
	if (r < 0) {
		fprintf(stderr, "mime-train parent: %s: %s\n", mime_strerror(r), ei.msg);
		goto out;
	}
	x = malloc(sizeof(float) * o.batch * mime_shape_size(&g.input));
	y = malloc(o.batch);
	perm = malloc(sizeof(int) * train.n);
	idx = malloc(sizeof(int) * o.batch);
	if (!x || !y || !perm || !idx) {
		fprintf(stderr, "mime-train parent: out of memory\n");
		goto out;
	}

	hd.fingerprint = run_fingerprint(&o, &g);
	if (o.resume && access(o.checkpoint, F_OK) == 0) {
		struct ckpt_header old = {0};

		r = ckpt_read(o.checkpoint, &old, net, opt, &ei);
		if (r < 0) {
			fprintf(stderr, "mime-train parent: %s: %s\n", mime_strerror(r), ei.msg);
			goto out;
		}
		if (old.fingerprint != hd.fingerprint) {
			fprintf(stderr,
			        "mime-train parent: checkpoint '%s' is from a run with other "
			        "settings\n",
			        o.checkpoint);
			goto out;
		}
		start_epoch = old.epochs_done;
		t_train = old.train_seconds;
		fprintf(stderr, "resumed from '%s' after epoch %d\n", o.checkpoint, start_epoch);
	}

	{
		long n_w = 0;

		for (int i = 0; i < n_params; i++)
			n_w += (long)params[i].n;
		fprintf(stderr,
		        "training %d/%d images, test %d, %ld params, batch %d, %d epochs, %d "
		        "threads, mean %.4f std %.4f\n",
		        steps_per_epoch * o.batch, train.n, test.n, n_w, o.batch, o.epochs,
		        o.threads, mean, std);
	}
	for (int ep = start_epoch; ep < o.epochs; ep++) {
		struct mimetrain_rng shuf, aug;
		double t0 = now_s(), loss_sum = 0, t_last = 0, dt;
		long correct = 0;
		float lr = 0;

		mimetrain_rng_seed(&shuf, mimetrain_rng_derive(o.seed, 2u * ep + 100));
		mimetrain_rng_seed(&aug, mimetrain_rng_derive(o.seed, 2u * ep + 101));
		mimetrain_shuffle(perm, train.n, &shuf);
		for (int s = 0; s < steps_per_epoch; s++) {
			int c;

			mimetrain_data_batch(&train, perm + (long)s * o.batch, o.batch, mean, std,
			                     &o.aug, &aug, x, y);
			mimetrain_net_forward(net, x, o.batch, 1);
			loss_sum += mimetrain_net_loss(net, y, &c);
			correct += c;
			mimetrain_net_backward(net, 0);
			lr = mimetrain_optim_step(opt);
			if (!isfinite(loss_sum)) {
				fprintf(stderr, "\nmime-train parent: loss diverged in epoch %d\n",
				        ep + 1);
				goto out;
			}
			if (tty && (now_s() - t_last > 0.25 || s + 1 == steps_per_epoch)) {
				double el = now_s() - t0;
				double rest = el / (s + 1) * steps_per_epoch * (o.epochs - ep - 1);

				progress(ep + 1, o.epochs, (long)(s + 1) * o.batch,
				         (long)steps_per_epoch * o.batch, t0, loss_sum / (s + 1),
				         rest);
				t_last = now_s();
			}
		}
		dt = now_s() - t0;
		t_train += dt;
		acc = evaluate(net, &test, o.batch, mean, std, x, y, idx);
		if (tty)
			fprintf(stderr, "\r\033[K");
		fprintf(stderr,
		        "epoch %d/%d loss %.4f train_acc %.2f%% test_acc %.2f%% lr %.5f time "
		        "%.1fs (%.0f img/s) eval %.1fs\n",
		        ep + 1, o.epochs, loss_sum / steps_per_epoch,
		        100.0 * correct / ((double)steps_per_epoch * o.batch), 100.0 * acc, lr, dt,
		        steps_per_epoch * o.batch / dt, now_s() - t0 - dt);
		if (o.checkpoint) {
			hd.epochs_done = ep + 1;
			hd.train_seconds = t_train;
			r = ckpt_write(o.checkpoint, &hd, net, opt);
			if (r < 0) {
				fprintf(stderr, "mime-train parent: checkpoint '%s': %s\n",
				        o.checkpoint, mime_strerror(r));
				goto out;
			}
		}
		if (o.stop_after > 0 && ep + 1 - start_epoch >= o.stop_after && ep + 1 < o.epochs) {
			fprintf(stderr, "stopped after epoch %d as asked; resume with --resume\n",
			        ep + 1);
			ret = 0;
			goto out;
		}
	}
	if (start_epoch >= o.epochs)
		acc = evaluate(net, &test, o.batch, mean, std, x, y, idx);

	prov = provenance(argc, argv, &o, t_train, o.epochs, acc, mean, std);
	if (!prov) {
		fprintf(stderr, "mime-train parent: out of memory\n");
		goto out;
	}
	r = write_bundle(o.out, net, mean, std, acc, prov, &ei);
	if (r < 0) {
		fprintf(stderr, "mime-train parent: '%s': %s%s%s\n", o.out, mime_strerror(r),
		        ei.msg[0] ? ": " : "", ei.msg);
		goto out;
	}
	fprintf(stderr, "wrote '%s': test accuracy %.2f%%, %d epochs, %.1f s training\n", o.out,
	        100.0 * acc, o.epochs, t_train);
	ret = 0;
out:
	free(prov);
	free(idx);
	free(perm);
	free(y);
	free(x);
	mimetrain_optim_destroy(opt);
	mimetrain_net_destroy(net);
	mimetrain_data_fini(&test);
	mimetrain_data_fini(&train);
	return ret;
}
