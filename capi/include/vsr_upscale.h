/* vsr_upscale.h: C API of the vsr-upscale renderer upscaler (G-buffer-guided, recurrent).
 *
 * A thin bridge to the Python RenderUpscaler (engine/render_api.py), which it runs in an embedded CPython.
 * Input conventions (depth, motion, jitter, normals...) are those of docs/render.md; this header only states
 * the memory layout. Build, threading and error rules: docs/capi.md.
 *
 * All images are float32, tightly packed, channels last (H x W x C), row 0 at the top: in host memory for
 * vsr_upscale, in CUDA device memory for vsr_upscale_cuda.
 * Every function returns a VsrStatus; on failure vsr_last_error() gives a one-line message for this thread.
 * No function aborts, exits or prints. C99.
 */
#ifndef VSR_UPSCALE_H
#define VSR_UPSCALE_H

#include <stddef.h>

#define VSR_VERSION_MAJOR 0
#define VSR_VERSION_MINOR 1
#define VSR_VERSION_PATCH 0

#if defined(_WIN32)
#  if defined(VSR_BUILDING_LIBRARY)
#    define VSR_API __declspec(dllexport)
#  else
#    define VSR_API __declspec(dllimport)
#  endif
#elif defined(__GNUC__)
#  define VSR_API __attribute__((visibility("default")))
#else
#  define VSR_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef enum VsrStatus {
    VSR_OK = 0,
    VSR_ERROR_ARGUMENT,  /* bad argument or input: NULL pointer, struct_size, shape, range (UsageError) */
    VSR_ERROR_MODEL,     /* unknown model, weights missing or not matching model/scale (ModelError) */
    VSR_ERROR_BACKEND,   /* backend unavailable or failed (BackendError) */
    VSR_ERROR_RUNTIME,   /* any other failure inside the engine */
    VSR_ERROR_PYTHON,    /* the embedded interpreter did not start or cannot import the engine */
    VSR_ERROR_NO_CUDA    /* vsr_upscale_cuda without a usable CUDA device, or on a CPU upscaler (DeviceError) */
} VsrStatus;

/* Options of one upscaler. Fill with vsr_config_init, then change fields. Strings are copied by vsr_create. */
typedef struct VsrConfig {
    size_t struct_size;      /* sizeof(VsrConfig), set by vsr_config_init: lets the struct grow */
    int scale;               /* model output/input size ratio per axis (2 or 4); default 2 */
    const char *model;       /* model name, e.g. "rdg-s"; NULL = the engine's default */
    const char *backend;     /* "torch" or "onnxruntime"; NULL = "torch" */
    const char *weights;     /* .safetensors (or .onnx for onnxruntime) path; NULL = shipped weights */
    const char *device;      /* where the model runs, e.g. "cuda" (needed by vsr_upscale_cuda); NULL = CPU */
    int depth_inverted;      /* nonzero for reverse-Z depth (1 = near plane) */
    float motion_scale[2];   /* multiplies motion into render pixels (x right, y down); default {1, 1} */
    int output_width;        /* display size; 0 and 0 = scale x render size */
    int output_height;
    int validate;            /* nonzero: value checks (ranges, units, finiteness): every frame on host buffers, the
                              * first frame of each history on device buffers (docs/render.md); default 1 */
} VsrConfig;

/* One rendered frame at render size (width x height). Fill with vsr_frame_init, then set the pointers. */
typedef struct VsrFrame {
    size_t struct_size;      /* sizeof(VsrFrame), set by vsr_frame_init */
    int width;               /* render size, pixels */
    int height;
    const float *color;      /* H x W x color_channels, display-referred in [0, 1] (linear HDR with exposure) */
    int color_channels;      /* 3 or 4 (alpha ignored) */
    const float *depth;      /* H x W device depth in [0, 1] */
    const float *motion;     /* H x W x 2, current -> previous, render pixels, without jitter */
    const float *normals;    /* H x W x normals_channels view-space unit normals; NULL = omitted */
    int normals_channels;    /* 3 or 4 */
    const float *albedo;     /* H x W x albedo_channels in [0, 1]; NULL = the colour stands in */
    int albedo_channels;     /* 3 or 4 */
    float jitter_x;          /* projection jitter in render pixels, each in [-0.5, 0.5] (FSR2's sign) */
    float jitter_y;
    int reset;               /* nonzero: drop the history (first frame, camera cut, size change) */
    float exposure;          /* > 0: color is linear HDR times this pre-exposure; <= 0: display-referred */
} VsrFrame;

typedef struct VsrUpscaler VsrUpscaler;

/* Defaults: scale 2, engine's model and backend, shipped weights, CPU, motion_scale {1, 1}, validate 1. */
VSR_API void vsr_config_init(VsrConfig *config);

/* Empty frame: no buffers, 3 channels each, no jitter, no reset, display-referred; sets struct_size. */
VSR_API void vsr_frame_init(VsrFrame *frame);

/* Starts the embedded interpreter on first use and loads the model; *out is NULL on failure. */
VSR_API VsrStatus vsr_create(const VsrConfig *config, VsrUpscaler **out);

/* Size of the output for a render size: the configured display size, or scale x render size. */
VSR_API VsrStatus vsr_output_size(const VsrUpscaler *upscaler, int render_width, int render_height,
                                  int *out_width, int *out_height);

/* Upscales one frame into out: out_height x out_width x 3 float32 (see vsr_output_size). out_floats is
 * the capacity of out in floats. The frame's buffers are only read during the call and may be reused after. */
VSR_API VsrStatus vsr_upscale(VsrUpscaler *upscaler, const VsrFrame *frame, float *out, size_t out_floats);

/* Like vsr_upscale, but every buffer of frame and out is CUDA device memory (same shapes and layout) and the
 * work is queued on cuda_stream, a cudaStream_t passed as void * (NULL = the legacy default stream). Returns once
 * the work is queued, without waiting for the device: synchronise the stream (or wait on an event recorded on it)
 * before reading out, and keep the frame's buffers unchanged until then. The upscaler must run on CUDA
 * (config.device "cuda"). Without a usable CUDA device it returns VSR_ERROR_NO_CUDA: use vsr_upscale. */
VSR_API VsrStatus vsr_upscale_cuda(VsrUpscaler *upscaler, const VsrFrame *frame, float *out, size_t out_floats,
                                   void *cuda_stream);

/* Forgets the history, like frame.reset on the next frame. */
VSR_API VsrStatus vsr_reset(VsrUpscaler *upscaler);

/* Releases the model; NULL is accepted. The upscaler is freed even when an error is reported. */
VSR_API VsrStatus vsr_destroy(VsrUpscaler *upscaler);

/* Message of this thread's last failure, one line; "" after a success. Valid until the next call here. */
VSR_API const char *vsr_last_error(void);

/* "MAJOR.MINOR.PATCH" of the library. */
VSR_API const char *vsr_version(void);

#ifdef __cplusplus
}
#endif

#endif /* VSR_UPSCALE_H */
