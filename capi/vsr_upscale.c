/* vsr_upscale.c: the C API as a thin bridge to engine.capi in an embedded CPython (docs/capi.md).
 *
 * Everything the model does happens in Python (engine/render_api.py). This file starts the interpreter once,
 * checks what only C can check (NULL pointers, struct sizes, buffer sizes), lends the caller's buffers to
 * Python as memoryviews for the length of one call, and turns exceptions into a status and one line of text.
 */
#define _GNU_SOURCE /* dladdr */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vsr_upscale.h"

#ifndef VSR_PYTHON_EXECUTABLE
#error "VSR_PYTHON_EXECUTABLE must name the python of the environment where vsr-upscale is installed"
#endif

#define MESSAGE_SIZE 1024

struct VsrUpscaler {
    PyObject *engine;  /* engine.render_api.RenderUpscaler */
    int scale;         /* output/input size ratio per axis */
    int output_width;  /* display size; 0 = scale x render size */
    int output_height;
};

static _Thread_local char last_error[MESSAGE_SIZE];

/* Set once by start_python; read only after pthread_once returned. */
static pthread_once_t python_once = PTHREAD_ONCE_INIT;
static VsrStatus python_status = VSR_ERROR_PYTHON;
static char python_error[MESSAGE_SIZE];
static PyObject *bridge;  /* engine.capi */
static PyObject *usage_error, *model_error, *backend_error, *device_error, *vsr_error;  /* engine.errors classes */

/* ------------------------------------------------------------------ messages */

static void cut_to_one_line(char *text) {
    char *end = strpbrk(text, "\r\n");
    if (end) *end = '\0';
}

static void vformat_line(char *buf, size_t size, const char *format, va_list args) {
    vsnprintf(buf, size, format, args); /* long paths or messages are cut, never overflow */
    cut_to_one_line(buf);
}

static void format_line(char *buf, size_t size, const char *format, ...) {
    va_list args;
    va_start(args, format);
    vformat_line(buf, size, format, args);
    va_end(args);
}

static VsrStatus fail(VsrStatus status, const char *format, ...) {
    va_list args;
    va_start(args, format);
    vformat_line(last_error, sizeof last_error, format, args);
    va_end(args);
    return status;
}

static VsrStatus status_of(PyObject *type) {
    if (!type) return VSR_ERROR_RUNTIME;
    if (usage_error && PyErr_GivenExceptionMatches(type, usage_error)) return VSR_ERROR_ARGUMENT;
    if (model_error && PyErr_GivenExceptionMatches(type, model_error)) return VSR_ERROR_MODEL;
    if (device_error && PyErr_GivenExceptionMatches(type, device_error)) return VSR_ERROR_NO_CUDA; /* a BackendError */
    if (backend_error && PyErr_GivenExceptionMatches(type, backend_error)) return VSR_ERROR_BACKEND;
    return VSR_ERROR_RUNTIME;
}

/* Takes the pending exception (and its traceback, which is dropped) into one line of buf; GIL held.
 * The engine's own errors read as their message, any other exception as "Type: message". */
static VsrStatus take_exception(char *buf, size_t size) {
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *value = PyErr_GetRaisedException(), *traceback = NULL; /* the traceback goes with value */
    PyObject *type = value ? Py_NewRef((PyObject *)Py_TYPE(value)) : NULL;
#else
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
#endif
    VsrStatus status = status_of(type);
    const char *name = type ? ((PyTypeObject *)type)->tp_name : "unknown error";
    PyObject *text = value ? PyObject_Str(value) : NULL;
    const char *message = text ? PyUnicode_AsUTF8(text) : NULL;
    if (!message) PyErr_Clear(); /* an exception whose str() fails is reported by its type */
    if (message && *message && vsr_error && PyErr_GivenExceptionMatches(type, vsr_error))
        snprintf(buf, size, "%s", message);
    else if (message && *message)
        snprintf(buf, size, "%s: %s", name, message);
    else
        snprintf(buf, size, "%s", name);
    cut_to_one_line(buf);
    Py_XDECREF(text);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(traceback);
    return status;
}

/* ------------------------------------------------------------------ the interpreter */

/* A host that dlopen()s this library RTLD_LOCAL hides libpython's symbols from the extension modules Python
 * loads later (numpy, torch): reopening libpython RTLD_GLOBAL makes them visible. The handle is kept. */
static void promote_libpython(void) {
    Dl_info info;
    if (dladdr(&Py_Version, &info) && info.dli_fname) dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_GLOBAL);
}

/* GIL held. Imports the bridge and the error classes; VSR_OK or VSR_ERROR_PYTHON with python_error set. */
static VsrStatus import_bridge(const char *python) {
    PyObject *errors = PyImport_ImportModule("engine.errors");
    if (errors) bridge = PyImport_ImportModule("engine.capi");
    if (!bridge) {
        char why[MESSAGE_SIZE];
        take_exception(why, sizeof why);
        Py_XDECREF(errors);
        format_line(python_error, sizeof python_error, "cannot import the engine with %s (%s): install vsr-upscale "
                 "into that environment or set VSR_PYTHON to the python of one that has it", python, why);
        return VSR_ERROR_PYTHON;
    }
    PyObject **classes[] = {&usage_error, &model_error, &backend_error, &device_error, &vsr_error};
    const char *names[] = {"UsageError", "ModelError", "BackendError", "DeviceError", "VsrError"};
    int found = 1;
    for (size_t i = 0; i < sizeof names / sizeof *names && found; i++)
        found = (*classes[i] = PyObject_GetAttrString(errors, names[i])) != NULL;
    Py_DECREF(errors);
    if (!found) {
        take_exception(python_error, sizeof python_error);
        return VSR_ERROR_PYTHON;
    }
    return VSR_OK;
}

/* Starts the interpreter of the configured environment, or reuses the host's; leaves the GIL released. */
static void start_python(void) {
    const char *python = getenv("VSR_PYTHON");
    if (!python || !*python) python = VSR_PYTHON_EXECUTABLE;
    if (Py_IsInitialized()) { /* the host embeds Python already: use its interpreter as it is */
        PyGILState_STATE gil = PyGILState_Ensure();
        python_status = import_bridge("the host's Python");
        PyGILState_Release(gil);
        return;
    }
    if (access(python, X_OK) != 0) {
        format_line(python_error, sizeof python_error, "Python executable %s not found: set VSR_PYTHON to the python "
                 "of the environment where vsr-upscale is installed", python);
        return;
    }
    promote_libpython();
    /* Isolated: no PYTHON* variables, no user site, no signal handlers taken from the host. The executable
     * path makes getpath and site read the venv's pyvenv.cfg, so its site-packages (and the engine) are used. */
    PyConfig config;
    PyConfig_InitIsolatedConfig(&config);
    PyStatus status = PyConfig_SetBytesString(&config, &config.program_name, python);
    if (!PyStatus_Exception(status)) status = PyConfig_SetBytesString(&config, &config.executable, python);
    if (!PyStatus_Exception(status)) status = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(status)) {
        format_line(python_error, sizeof python_error, "cannot start Python %s: %s", python,
                 status.err_msg ? status.err_msg : "initialisation failed");
        return;
    }
    python_status = import_bridge(python);
    PyEval_SaveThread(); /* every call takes the GIL with PyGILState_Ensure, from any thread */
}

static VsrStatus need_python(void) {
    pthread_once(&python_once, start_python);
    return python_status == VSR_OK ? VSR_OK : fail(python_status, "%s", python_error);
}

/* ------------------------------------------------------------------ API */

void vsr_config_init(VsrConfig *config) {
    if (!config) return;
    memset(config, 0, sizeof *config);
    config->struct_size = sizeof *config;
    config->scale = 2;
    config->motion_scale[0] = config->motion_scale[1] = 1.0f;
    config->validate = 1;
}

void vsr_frame_init(VsrFrame *frame) {
    if (!frame) return;
    memset(frame, 0, sizeof *frame);
    frame->struct_size = sizeof *frame;
    frame->color_channels = frame->normals_channels = frame->albedo_channels = 3;
}

const char *vsr_last_error(void) { return last_error; }

const char *vsr_version(void) { return "0.1.0"; }

/* Keyword arguments of RenderUpscaler for config; strings left NULL are left out (Python's defaults). */
static PyObject *config_options(const VsrConfig *config) {
    PyObject *options = Py_BuildValue("{s:i,s:N,s:(dd),s:N}", "scale", config->scale, "depth_inverted",
                                      PyBool_FromLong(config->depth_inverted), "motion_scale",
                                      (double)config->motion_scale[0], (double)config->motion_scale[1],
                                      "validate", PyBool_FromLong(config->validate));
    const char *names[] = {"model", "backend", "weights", "device"};
    const char *values[] = {config->model, config->backend, config->weights, config->device};
    for (size_t i = 0; options && i < sizeof names / sizeof *names; i++) {
        if (!values[i]) continue;
        PyObject *text = PyUnicode_DecodeFSDefault(values[i]); /* paths: undecodable bytes survive */
        if (!text || PyDict_SetItemString(options, names[i], text) < 0) Py_CLEAR(options);
        Py_XDECREF(text);
    }
    if (options && config->output_width > 0) {
        PyObject *size = Py_BuildValue("(ii)", config->output_width, config->output_height);
        if (!size || PyDict_SetItemString(options, "output_size", size) < 0) Py_CLEAR(options);
        Py_XDECREF(size);
    }
    return options;
}

VsrStatus vsr_create(const VsrConfig *config, VsrUpscaler **out) {
    last_error[0] = '\0';
    if (!out) return fail(VSR_ERROR_ARGUMENT, "vsr_create: out is NULL");
    *out = NULL;
    if (!config) return fail(VSR_ERROR_ARGUMENT, "vsr_create: config is NULL");
    /* Only this version's size is known so far; later versions will also accept each earlier size. */
    if (config->struct_size != sizeof(VsrConfig))
        return fail(VSR_ERROR_ARGUMENT, "vsr_create: config.struct_size is %zu, expected %zu: fill it with "
                    "vsr_config_init from this library's header", config->struct_size, sizeof(VsrConfig));
    if (config->scale < 1)
        return fail(VSR_ERROR_ARGUMENT, "vsr_create: scale must be a positive integer, got %d", config->scale);
    if (config->output_width < 0 || config->output_height < 0 || (config->output_width == 0) != (config->output_height == 0))
        return fail(VSR_ERROR_ARGUMENT, "vsr_create: output size must be 0x0 (scale x render size) or positive, "
                    "got %dx%d", config->output_width, config->output_height);
    VsrStatus status = need_python();
    if (status != VSR_OK) return status;
    VsrUpscaler *up = calloc(1, sizeof *up);
    if (!up) return fail(VSR_ERROR_RUNTIME, "vsr_create: out of memory");
    up->scale = config->scale;
    up->output_width = config->output_width;
    up->output_height = config->output_height;

    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *options = config_options(config);
    PyObject *create = options ? PyObject_GetAttrString(bridge, "create") : NULL;
    PyObject *args = create ? PyTuple_New(0) : NULL;
    up->engine = args ? PyObject_Call(create, args, options) : NULL;
    if (!up->engine) status = take_exception(last_error, sizeof last_error);
    Py_XDECREF(args);
    Py_XDECREF(create);
    Py_XDECREF(options);
    PyGILState_Release(gil);

    if (status != VSR_OK) {
        free(up);
        return status;
    }
    *out = up;
    return VSR_OK;
}

VsrStatus vsr_output_size(const VsrUpscaler *upscaler, int render_width, int render_height, int *out_width,
                          int *out_height) {
    last_error[0] = '\0';
    if (!upscaler || !out_width || !out_height)
        return fail(VSR_ERROR_ARGUMENT, "vsr_output_size: %s is NULL", !upscaler ? "upscaler" : "an output pointer");
    if (render_width <= 0 || render_height <= 0 || render_width > INT_MAX / upscaler->scale ||
        render_height > INT_MAX / upscaler->scale)
        return fail(VSR_ERROR_ARGUMENT, "render size must be positive and at most INT_MAX / scale, got %dx%d",
                    render_width, render_height);
    *out_width = upscaler->output_width ? upscaler->output_width : render_width * upscaler->scale;
    *out_height = upscaler->output_height ? upscaler->output_height : render_height * upscaler->scale;
    return VSR_OK;
}

/* C's share of the frame checks: what decides how many bytes Python may read. */
static VsrStatus check_frame(const VsrFrame *frame) {
    if (frame->struct_size != sizeof(VsrFrame))
        return fail(VSR_ERROR_ARGUMENT, "vsr_upscale: frame.struct_size is %zu, expected %zu: fill it with "
                    "vsr_frame_init from this library's header", frame->struct_size, sizeof(VsrFrame));
    if (frame->width <= 0 || frame->height <= 0 || (size_t)frame->width > PY_SSIZE_T_MAX / 16 / (size_t)frame->height)
        return fail(VSR_ERROR_ARGUMENT, "vsr_upscale: render size must be positive, got %dx%d", frame->width,
                    frame->height);
    const char *missing = !frame->color ? "color" : !frame->depth ? "depth" : !frame->motion ? "motion" : NULL;
    if (missing) return fail(VSR_ERROR_ARGUMENT, "vsr_upscale: frame.%s is NULL; color, depth and motion are required", missing);
    const char *names[] = {"color", "normals", "albedo"};
    const int channels[] = {frame->color_channels, frame->normals_channels, frame->albedo_channels};
    const void *given[] = {frame->color, frame->normals, frame->albedo};
    for (int i = 0; i < 3; i++)
        if (given[i] && channels[i] != 3 && channels[i] != 4)
            return fail(VSR_ERROR_ARGUMENT, "vsr_upscale: frame.%s_channels is %d; expected 3 or 4", names[i], channels[i]);
    return VSR_OK;
}

/* The checks both entry points share; *needed is the output's size in floats. */
static VsrStatus check_call(const char *name, const VsrUpscaler *upscaler, const VsrFrame *frame, const float *out,
                            size_t out_floats, size_t *needed) {
    if (!upscaler || !frame || !out)
        return fail(VSR_ERROR_ARGUMENT, "%s: %s is NULL", name, !upscaler ? "upscaler" : !frame ? "frame" : "out");
    VsrStatus status = check_frame(frame);
    int out_width, out_height;
    if (status == VSR_OK) status = vsr_output_size(upscaler, frame->width, frame->height, &out_width, &out_height);
    if (status != VSR_OK) return status;
    *needed = (size_t)out_width * (size_t)out_height * 3;
    if (out_floats < *needed)
        return fail(VSR_ERROR_ARGUMENT, "%s: out holds %zu floats; a %dx%d output needs %zu (height x width x 3)",
                    name, out_floats, out_width, out_height, *needed);
    return VSR_OK;
}

VsrStatus vsr_upscale(VsrUpscaler *upscaler, const VsrFrame *frame, float *out, size_t out_floats) {
    last_error[0] = '\0';
    size_t needed = 0;
    VsrStatus status = check_call("vsr_upscale", upscaler, frame, out, out_floats, &needed);
    if (status != VSR_OK) return status;
    size_t pixels = (size_t)frame->width * (size_t)frame->height;

    /* color, depth, motion, normals, albedo (read-only), out (written) */
    const float *data[6] = {frame->color, frame->depth, frame->motion, frame->normals, frame->albedo, out};
    const size_t floats[6] = {pixels * (size_t)frame->color_channels, pixels, pixels * 2,
                              pixels * (size_t)frame->normals_channels, pixels * (size_t)frame->albedo_channels, needed};
    PyObject *views[6] = {NULL};
    PyGILState_STATE gil = PyGILState_Ensure();
    int made = 1;
    for (int i = 0; i < 6 && made; i++)
        if (data[i]) {
            views[i] = PyMemoryView_FromMemory((char *)data[i], (Py_ssize_t)(floats[i] * sizeof(float)),
                                               i == 5 ? PyBUF_WRITE : PyBUF_READ);
            made = views[i] != NULL;
        }
    PyObject *exposure = frame->exposure <= 0.0f ? Py_NewRef(Py_None) : PyFloat_FromDouble(frame->exposure);
    PyObject *result = NULL;
    if (made && exposure)
        result = PyObject_CallMethod(bridge, "upscale", "OiiOOOOO(dd)NOO", upscaler->engine, frame->height,
                                     frame->width, views[0], views[1], views[2], views[3] ? views[3] : Py_None,
                                     views[4] ? views[4] : Py_None, (double)frame->jitter_x, (double)frame->jitter_y,
                                     PyBool_FromLong(frame->reset), exposure, views[5]);
    if (!result) status = take_exception(last_error, sizeof last_error);
    Py_XDECREF(result);
    Py_XDECREF(exposure);
    /* The caller may free its buffers after we return: nothing in Python may still point at them. */
    for (int i = 0; i < 6; i++) {
        if (status == VSR_OK && views[i] && Py_REFCNT(views[i]) != 1)
            status = fail(VSR_ERROR_RUNTIME, "vsr_upscale: internal error: the engine kept a reference to a caller buffer");
        Py_XDECREF(views[i]);
    }
    PyGILState_Release(gil);
    return status;
}

VsrStatus vsr_upscale_cuda(VsrUpscaler *upscaler, const VsrFrame *frame, float *out, size_t out_floats,
                           void *cuda_stream) {
    last_error[0] = '\0';
    size_t needed = 0;
    VsrStatus status = check_call("vsr_upscale_cuda", upscaler, frame, out, out_floats, &needed);
    if (status != VSR_OK) return status;
    /* Device pointers travel as integers: Python wraps them (__cuda_array_interface__) without touching them here. */
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *exposure = frame->exposure <= 0.0f ? Py_NewRef(Py_None) : PyFloat_FromDouble(frame->exposure);
    PyObject *result = !exposure ? NULL : PyObject_CallMethod(
        bridge, "upscale_cuda", "Oii(KKKKK)(iiiii)(dd)NOKK", upscaler->engine, frame->height, frame->width,
        (unsigned long long)(uintptr_t)frame->color, (unsigned long long)(uintptr_t)frame->depth,
        (unsigned long long)(uintptr_t)frame->motion, (unsigned long long)(uintptr_t)frame->normals,
        (unsigned long long)(uintptr_t)frame->albedo, frame->color_channels, 1, 2, frame->normals_channels,
        frame->albedo_channels, (double)frame->jitter_x, (double)frame->jitter_y, PyBool_FromLong(frame->reset),
        exposure, (unsigned long long)(uintptr_t)out, (unsigned long long)(uintptr_t)cuda_stream);
    if (!result) status = take_exception(last_error, sizeof last_error);
    Py_XDECREF(result);
    Py_XDECREF(exposure);
    PyGILState_Release(gil);
    return status;
}

VsrStatus vsr_reset(VsrUpscaler *upscaler) {
    last_error[0] = '\0';
    if (!upscaler) return fail(VSR_ERROR_ARGUMENT, "vsr_reset: upscaler is NULL");
    VsrStatus status = VSR_OK;
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *result = PyObject_CallMethod(upscaler->engine, "reset", NULL);
    if (!result) status = take_exception(last_error, sizeof last_error);
    Py_XDECREF(result);
    PyGILState_Release(gil);
    return status;
}

VsrStatus vsr_destroy(VsrUpscaler *upscaler) {
    last_error[0] = '\0';
    if (!upscaler) return VSR_OK;
    VsrStatus status = VSR_OK;
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *result = PyObject_CallMethod(upscaler->engine, "close", NULL);
    if (!result) status = take_exception(last_error, sizeof last_error);
    Py_XDECREF(result);
    Py_DECREF(upscaler->engine);
    PyGILState_Release(gil);
    free(upscaler);
    return status;
}
