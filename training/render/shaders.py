"""GLSL for the G-buffer pass: one program writes colour, view-space normals, motion+depth and albedo."""

from __future__ import annotations

# Attribute layout of every mesh: position (3), normal (3), uv (2), float32.
ATTRIBUTES = ("in_pos", "in_normal", "in_uv")
VERTEX_FORMAT = "3f 3f 2f"

VERTEX = """
#version 330 core
in vec3 in_pos;
in vec3 in_normal;
in vec2 in_uv;
uniform mat4 model;        // object -> world, this frame
uniform mat4 model_prev;   // object -> world, previous frame
uniform mat4 view;         // world -> view, this frame
uniform mat4 proj_jit;     // projection with this frame's sub-pixel jitter (rasterisation)
uniform mat4 view_proj;    // unjittered world -> clip, this frame (motion vectors)
uniform mat4 view_proj_prev;  // unjittered world -> clip, previous frame
out vec3 v_world;
out vec3 v_normal_world;
out vec3 v_normal_view;
out vec2 v_uv;
out vec4 v_clip;
out vec4 v_clip_prev;
void main() {
    vec4 world = model * vec4(in_pos, 1.0);
    vec4 world_prev = model_prev * vec4(in_pos, 1.0);
    // Rigid motion + per-axis scale: the inverse transpose keeps normals perpendicular.
    mat3 normal_mat = transpose(inverse(mat3(view * model)));
    v_world = world.xyz;
    v_normal_world = transpose(inverse(mat3(model))) * in_normal;
    v_normal_view = normal_mat * in_normal;
    v_uv = in_uv;
    v_clip = view_proj * world;
    v_clip_prev = view_proj_prev * world_prev;
    gl_Position = proj_jit * view * world;
}
"""

FRAGMENT = """
#version 330 core
in vec3 v_world;
in vec3 v_normal_world;
in vec3 v_normal_view;
in vec2 v_uv;
in vec4 v_clip;
in vec4 v_clip_prev;
uniform sampler2D tex;
uniform float uv_scale;
uniform float lod_bias;     // negative at render resolution: sharper textures, as upscalers ask for
uniform vec2 viewport;      // render target size in pixels (w, h)
uniform vec3 eye;           // camera position (world)
uniform vec3 light_pos[2];  // point lights (world)
uniform vec3 light_col[2];  // linear RGB intensity
uniform float ambient;
uniform float shininess;    // Blinn-Phong exponent
uniform float specular;     // specular strength
uniform bool unlit;         // sky: shows its texture as is
layout(location = 0) out vec4 out_color;   // display-referred colour in [0, 1]
layout(location = 1) out vec4 out_normal;  // view-space unit normal (x right, y up, z to the viewer)
layout(location = 2) out vec4 out_motion;  // (dx, dy) current -> previous in pixels, y down; z = device depth
layout(location = 3) out vec4 out_albedo;  // surface colour before lighting, display-referred

vec3 filmic(vec3 x) {  // Narkowicz's ACES fit
    return clamp((x * (2.51 * x + 0.03)) / (x * (2.43 * x + 0.59) + 0.14), 0.0, 1.0);
}

void main() {
    vec3 base = texture(tex, v_uv * uv_scale, lod_bias).rgb;
    vec3 color = base;
    if (!unlit) {
        vec3 lin = pow(base, vec3(2.2));
        vec3 n = normalize(v_normal_world);
        vec3 v = normalize(eye - v_world);
        vec3 acc = lin * ambient;
        for (int i = 0; i < 2; ++i) {
            vec3 to_l = light_pos[i] - v_world;
            float att = 40.0 / (10.0 + dot(to_l, to_l));
            vec3 l = normalize(to_l);
            vec3 h = normalize(l + v);
            float spec = pow(max(dot(n, h), 0.0), shininess) * specular * step(0.0, dot(n, l));
            acc += light_col[i] * att * (lin * max(dot(n, l), 0.0) + spec);
        }
        color = pow(filmic(1.4 * acc), vec3(1.0 / 2.2));
    }
    out_color = vec4(color, 1.0);
    out_normal = vec4(normalize(v_normal_view), 0.0);
    vec2 cur = (v_clip.xy / v_clip.w * 0.5 + 0.5) * viewport;
    vec2 prev = (v_clip_prev.xy / v_clip_prev.w * 0.5 + 0.5) * viewport;
    // GL window y points up; images are stored top row first, so y flips sign.
    out_motion = vec4(prev.x - cur.x, -(prev.y - cur.y), gl_FragCoord.z, 0.0);
    out_albedo = vec4(base, 1.0);
}
"""
