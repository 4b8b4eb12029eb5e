/* vsr_capi_check: misuse of the C API gives a status and one line, never a crash.
 *
 *   vsr_capi_check MODEL WEIGHTS      (a G-buffer model at scale 2 and its .safetensors)
 *
 * Prints one line per check and exits 1 if any check failed.
 */
#include <stdio.h>
#include <string.h>

#include "vsr_upscale.h"

#define W 8
#define H 6

static int failures;

static void expect(const char *what, VsrStatus got, VsrStatus want, const char *needle) {
    const char *message = vsr_last_error();
    int ok = got == want && strstr(message, needle) && !strchr(message, '\n');
    printf("%s %s: status %d, \"%s\"\n", ok ? "ok  " : "FAIL", what, (int)got, message);
    failures += !ok;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: vsr_capi_check MODEL WEIGHTS\n");
        return 2;
    }
    VsrConfig config;
    VsrUpscaler *up = NULL;
    static float color[H * W * 3], depth[H * W], motion[H * W * 2], out[4 * H * W * 3];

    /* Checked in C, before the interpreter starts */
    expect("NULL config", vsr_create(NULL, &up), VSR_ERROR_ARGUMENT, "config is NULL");
    vsr_config_init(&config);
    config.struct_size -= 4;
    expect("old struct_size", vsr_create(&config, &up), VSR_ERROR_ARGUMENT, "struct_size");
    vsr_config_init(&config);
    config.output_width = 100;
    expect("half an output size", vsr_create(&config, &up), VSR_ERROR_ARGUMENT, "output size");
    expect("NULL upscaler", vsr_upscale(NULL, NULL, out, 0), VSR_ERROR_ARGUMENT, "upscaler is NULL");
    expect("destroy NULL", vsr_destroy(NULL), VSR_OK, "");

    /* Checked in Python */
    vsr_config_init(&config);
    config.model = "no-such-model";
    config.weights = argv[2];
    expect("unknown model", vsr_create(&config, &up), VSR_ERROR_MODEL, "no-such-model");
    config.model = argv[1];
    config.backend = "vulkan";
    expect("unknown backend", vsr_create(&config, &up), VSR_ERROR_ARGUMENT, "vulkan");
    config.backend = NULL;
    expect("create", vsr_create(&config, &up), VSR_OK, "");
    if (!up) return 1;

    VsrFrame frame;
    vsr_frame_init(&frame);
    frame.width = W, frame.height = H;
    frame.color = color, frame.depth = depth, frame.motion = motion;
    expect("frame without init", vsr_upscale(up, &(VsrFrame){0}, out, sizeof out / sizeof *out), VSR_ERROR_ARGUMENT,
           "vsr_frame_init");
    expect("small out", vsr_upscale(up, &frame, out, 10), VSR_ERROR_ARGUMENT, "needs 576");
    frame.color_channels = 2;
    expect("two colour channels", vsr_upscale(up, &frame, out, sizeof out / sizeof *out), VSR_ERROR_ARGUMENT, "3 or 4");
    frame.color_channels = 3;
    depth[0] = 7.0f;
    expect("depth out of range", vsr_upscale(up, &frame, out, sizeof out / sizeof *out), VSR_ERROR_ARGUMENT, "device depth");
    depth[0] = 0.5f;
    expect("upscale", vsr_upscale(up, &frame, out, sizeof out / sizeof *out), VSR_OK, "");
    /* The device entry: C's checks first; then this CPU upscaler (or a machine without CUDA) is refused */
    expect("device entry, NULL out", vsr_upscale_cuda(up, &frame, NULL, 0, NULL), VSR_ERROR_ARGUMENT, "out is NULL");
    expect("device entry, small out", vsr_upscale_cuda(up, &frame, out, 10, NULL), VSR_ERROR_ARGUMENT, "needs 576");
    expect("device entry on a CPU upscaler", vsr_upscale_cuda(up, &frame, out, sizeof out / sizeof *out, NULL),
           VSR_ERROR_NO_CUDA, "vsr_upscale_cuda");
    expect("reset", vsr_reset(up), VSR_OK, "");
    expect("destroy", vsr_destroy(up), VSR_OK, "");
    return failures ? 1 : 0;
}
