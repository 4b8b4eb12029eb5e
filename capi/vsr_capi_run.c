/* vsr_capi_run: drives the C API on raw float32 frames from a file, or on a synthetic moving pattern.
 *
 *   vsr_capi_run --in FRAMES.f32 --out OUT.f32 --size WxH --frames N [--scale S] [--model M] [--backend B] [--weights W]
 *   vsr_capi_run --size WxH --frames N [...]         (synthetic frames; the ctest)
 *
 * Input block per frame, float32 HWC: color H*W*3, depth H*W, motion H*W*2, normals H*W*3, albedo H*W*3, then
 * jitter_x, jitter_y, reset. Output: the upscaled frames, out_h*out_w*3 floats each, one after the other.
 * Exit codes follow vsr-upscale's (docs/cli.md): 2 usage, 3 input, 5 output, 6 model, 7 backend, 1 other.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vsr_upscale.h"

typedef struct Options {
    const char *in, *out;  /* raw float32 files; in NULL = synthetic frames */
    int width, height;     /* render size */
    int frames;            /* frames to upscale */
    VsrConfig config;
} Options;

static int error(int code, const char *what, const char *detail) {
    fprintf(stderr, "vsr_capi_run: error: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    return code;
}

static int exit_code(VsrStatus status) {
    switch (status) {
    case VSR_OK: return 0;
    case VSR_ERROR_ARGUMENT: return 2;
    case VSR_ERROR_MODEL: return 6;
    case VSR_ERROR_BACKEND: return 7;
    case VSR_ERROR_NO_CUDA: return 7;
    default: return 1;
    }
}

/* 0, or the exit code after printing what is wrong with the command line. */
static int parse(int argc, char **argv, Options *o) {
    memset(o, 0, sizeof *o);
    o->width = 64, o->height = 48, o->frames = 8;
    vsr_config_init(&o->config);
    for (int i = 1; i < argc; i++) {
        const char *flag = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(flag, "--help") || !strcmp(flag, "-h")) {
            printf("usage: vsr_capi_run [--in FILE --out FILE] [--size WxH] [--frames N] [--scale S] [--model M] "
                   "[--backend B] [--weights W]\n");
            exit(0);
        }
        if (!value) return error(2, flag, "needs a value");
        char end;
        if (!strcmp(flag, "--in")) o->in = value;
        else if (!strcmp(flag, "--out")) o->out = value;
        else if (!strcmp(flag, "--model")) o->config.model = value;
        else if (!strcmp(flag, "--backend")) o->config.backend = value;
        else if (!strcmp(flag, "--weights")) o->config.weights = value;
        else if (!strcmp(flag, "--size")) {
            if (sscanf(value, "%dx%d%c", &o->width, &o->height, &end) != 2 || o->width <= 0 || o->height <= 0)
                return error(2, "--size must be WIDTHxHEIGHT in render pixels, e.g. 64x48", NULL);
        } else if (!strcmp(flag, "--frames")) {
            if (sscanf(value, "%d%c", &o->frames, &end) != 1 || o->frames <= 0)
                return error(2, "--frames must be a positive integer", NULL);
        } else if (!strcmp(flag, "--scale")) {
            if (sscanf(value, "%d%c", &o->config.scale, &end) != 1)
                return error(2, "--scale must be an integer (2 or 4)", NULL);
        } else
            return error(2, "unknown option", flag);
        i++;
    }
    if ((o->in == NULL) != (o->out == NULL)) return error(2, "--in and --out go together", NULL);
    return 0;
}

/* Element i (1-based) of the van der Corput sequence in base b, as FSR2's jitter uses. */
static float halton(int i, int b) {
    float f = 1.0f, r = 0.0f;
    for (; i > 0; i /= b) {
        f /= (float)b;
        r += f * (float)(i % b);
    }
    return r;
}

/* Frame t of stripes drifting right by 0.75 render pixel per frame over a depth ramp. */
static void synthesize(int t, int w, int h, float *block) {
    size_t n = (size_t)w * h;
    float *color = block, *depth = color + 3 * n, *motion = depth + n, *normals = motion + 2 * n;
    float *albedo = normals + 3 * n, *tail = albedo + 3 * n;
    const float speed = 0.75f;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            size_t p = (size_t)y * w + x;
            float u = (float)x - speed * (float)t;
            float v = 0.5f + 0.5f * sinf(0.6f * u) * cosf(0.3f * (float)y);
            color[3 * p] = v, color[3 * p + 1] = 0.5f * v + 0.25f, color[3 * p + 2] = 1.0f - v;
            depth[p] = 0.5f + 0.4f * (float)y / (float)h;
            motion[2 * p] = -speed, motion[2 * p + 1] = 0.0f; /* current -> previous */
            normals[3 * p] = 0.0f, normals[3 * p + 1] = 0.0f, normals[3 * p + 2] = 1.0f;
            memcpy(albedo + 3 * p, color + 3 * p, 3 * sizeof(float));
        }
    tail[0] = halton(t % 8 + 1, 2) - 0.5f, tail[1] = halton(t % 8 + 1, 3) - 0.5f;
    tail[2] = t == 0 ? 1.0f : 0.0f;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Upscales every frame; returns the exit code. */
static int run(const Options *o, VsrUpscaler *up, FILE *in, FILE *out) {
    int ow, oh;
    if (vsr_output_size(up, o->width, o->height, &ow, &oh) != VSR_OK) return error(2, vsr_last_error(), NULL);
    size_t n = (size_t)o->width * o->height, block_floats = 12 * n + 3, out_floats = (size_t)ow * oh * 3;
    float *block = malloc(block_floats * sizeof(float)), *result = malloc(out_floats * sizeof(float));
    int code = block && result ? 0 : error(1, "out of memory", NULL);
    double total = 0.0;
    for (int t = 0; t < o->frames && code == 0; t++) {
        if (!in) synthesize(t, o->width, o->height, block);
        else if (fread(block, sizeof(float), block_floats, in) != block_floats) {
            code = error(3, o->in, "ends before the last frame (each frame is 12*W*H + 3 float32 values)");
            break;
        }
        VsrFrame f;
        vsr_frame_init(&f);
        f.width = o->width, f.height = o->height;
        f.color = block, f.depth = block + 3 * n, f.motion = block + 4 * n, f.normals = block + 6 * n;
        f.albedo = block + 9 * n;
        f.jitter_x = block[12 * n], f.jitter_y = block[12 * n + 1], f.reset = block[12 * n + 2] != 0.0f;
        double start = now_ms();
        VsrStatus status = vsr_upscale(up, &f, result, out_floats);
        double ms = now_ms() - start;
        if (status != VSR_OK) {
            code = error(exit_code(status), vsr_last_error(), NULL);
            break;
        }
        if (t > 0) total += ms;
        printf("frame %d: %dx%d -> %dx%d in %.2f ms\n", t, o->width, o->height, ow, oh, ms);
        if (out && fwrite(result, sizeof(float), out_floats, out) != out_floats) code = error(5, o->out, "write failed");
    }
    if (code == 0 && o->frames > 1) printf("mean latency after the first frame: %.2f ms\n", total / (o->frames - 1));
    free(block);
    free(result);
    return code;
}

int main(int argc, char **argv) {
    Options o;
    int code = parse(argc, argv, &o);
    if (code) return code;
    FILE *in = NULL, *out = NULL;
    if (o.in && !(in = fopen(o.in, "rb"))) return error(3, o.in, "cannot open for reading");
    if (o.out && !(out = fopen(o.out, "wb"))) {
        fclose(in);
        return error(5, o.out, "cannot open for writing");
    }
    printf("vsr-upscale C API %s\n", vsr_version());
    VsrUpscaler *up = NULL;
    VsrStatus status = vsr_create(&o.config, &up);
    code = status == VSR_OK ? run(&o, up, in, out) : error(exit_code(status), vsr_last_error(), NULL);
    if (vsr_destroy(up) != VSR_OK && code == 0) code = error(1, vsr_last_error(), NULL);
    if (in) fclose(in);
    if (out && fclose(out) != 0 && code == 0) code = error(5, o.out, "write failed");
    return code;
}
