"""OpenGL for the renderer: the headless platform (OSMesa / EGL), one context, the triangle-id pass.

Nothing here runs at import: :func:`select_platform` points PyOpenGL at a platform (the
``PYOPENGL_PLATFORM`` environment variable, read by PyOpenGL when it is first imported) and
:func:`import_pyrender` also applies the numpy-2 shim pyrender 0.1.45 needs (``np.infty``); both
are called when a :class:`GLContext` (one per :class:`synth.render.FaceRenderer`) is created.

The context comes from pyrender's platform classes (``pyrender.platforms``: ``init_context``,
``make_current``, ``delete_context``, their public methods); no pyrender scene, renderer or private
attribute is involved. :class:`PrimitiveIdPass` draws the indexed mesh with a two-line GLSL program
writing ``gl_PrimitiveID + 1`` into an ``R32UI`` target of its own framebuffer, with the projection
of :func:`projection_matrix` (the :mod:`synth.camera` convention as an OpenGL clip-space matrix).
"""
from __future__ import annotations

import os
import sys

import numpy as np

__all__ = ["PLATFORMS", "select_platform", "import_pyrender", "GLContext", "projection_matrix", "PrimitiveIdPass"]

PLATFORMS = ("osmesa", "egl")


def select_platform(platform: str = "osmesa") -> None:
    """Make PyOpenGL use ``platform`` (``osmesa`` or ``egl``) in this process.

    PyOpenGL picks its platform from ``PYOPENGL_PLATFORM`` when it is first imported, so this sets
    the variable if OpenGL is not imported yet; asking for another platform afterwards raises
    ``ValueError``.
    """
    if platform not in PLATFORMS:
        raise ValueError(f"--platform must be one of {PLATFORMS}, got {platform!r}")
    current = os.environ.get("PYOPENGL_PLATFORM")
    if current == platform:
        return
    if "OpenGL" in sys.modules:
        raise ValueError(f"OpenGL already initialised for {current or 'the default platform'!r}; cannot render "
                         f"with {platform!r} in this process")
    os.environ["PYOPENGL_PLATFORM"] = platform


def import_pyrender(platform: str = "osmesa"):
    """The ``pyrender`` module, imported for ``platform`` (:func:`select_platform`) with the numpy-2
    shim it needs (pyrender 0.1.45 still uses ``np.infty``, removed in numpy 2)."""
    select_platform(platform)
    if not hasattr(np, "infty"):
        np.infty = np.inf
    import pyrender

    return pyrender


class GLContext:
    """A headless OpenGL 3.3 core context of ``platform`` (``osmesa`` or ``egl``; EGL uses the GPU
    ``$EGL_DEVICE_ID``, default 0), made current on creation. Call :meth:`make_current` before
    drawing when other contexts may have been made current since, and :meth:`delete` when done."""

    def __init__(self, platform: str, width: int, height: int):
        import_pyrender(platform)
        if platform == "egl":
            from pyrender.platforms import egl

            device = egl.get_device_by_index(int(os.environ.get("EGL_DEVICE_ID", "0")))
            self._platform = egl.EGLPlatform(width, height, device=device)
        else:
            from pyrender.platforms.osmesa import OSMesaPlatform

            self._platform = OSMesaPlatform(width, height)
        self._platform.init_context()
        self._platform.make_current()

    def make_current(self) -> None:
        self._platform.make_current()

    def delete(self) -> None:
        if self._platform is not None:
            self._platform.make_current()
            self._platform.delete_context()
            self._platform = None


def projection_matrix(intrinsics: np.ndarray, projection: str, size: int, znear: float, zfar: float) -> np.ndarray:
    """OpenGL clip-space matrix ``(4, 4)`` float64 (row-major) for the :mod:`synth.camera` projection
    (perspective or weak perspective, any principal point) of a ``size x size`` image."""
    k = intrinsics
    fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
    n, f = znear, zfar
    p = np.zeros((4, 4))
    if projection == "perspective":
        # window x = fx x / d + cx, window y (from the bottom) = fy y / d + (H - cy)
        p[0, 0] = 2.0 * fx / size
        p[1, 1] = 2.0 * fy / size
        p[0, 2] = 1.0 - 2.0 * cx / size
        p[1, 2] = 2.0 * cy / size - 1.0
        p[2, 2] = (f + n) / (n - f)
        p[2, 3] = 2.0 * f * n / (n - f)
        p[3, 2] = -1.0
    else:
        # window x = s x + cx, window y = s y + (H - cy)
        p[0, 0] = 2.0 * fx / size
        p[1, 1] = 2.0 * fy / size
        p[0, 3] = 2.0 * cx / size - 1.0
        p[1, 3] = 1.0 - 2.0 * cy / size
        p[2, 2] = 2.0 / (n - f)
        p[2, 3] = (f + n) / (n - f)
        p[3, 3] = 1.0
    return p


# ------------------------------------------------------------------------------ the triangle-id pass
_ID_VERTEX_SHADER = """#version 330 core
layout(location = 0) in vec3 position;
uniform mat4 projection;
void main() { gl_Position = projection * vec4(position, 1.0); }
"""
_ID_FRAGMENT_SHADER = """#version 330 core
out uint triangle_id;
void main() { triangle_id = uint(gl_PrimitiveID + 1); }
"""


class PrimitiveIdPass:
    """Triangle-id pass in the current GL context (:class:`GLContext`): the indexed mesh (vertex
    positions ``(N, 3)`` float32, the only per-sample upload, plus a static index buffer) drawn by a
    two-line GLSL program whose fragment shader writes ``gl_PrimitiveID + 1`` into a single-sample
    ``R32UI`` colour attachment of its own framebuffer (with a 24-bit depth buffer, ``GL_LESS``,
    back faces culled: the state of pyrender's forward pass). One ``glReadPixels`` of that attachment
    gives the id image; nothing else is read back."""

    def __init__(self, size: int, triangles: np.ndarray, n_vertices: int):
        from OpenGL import GL
        from OpenGL.GL import shaders

        self.size = size
        self.n_vertices = int(n_vertices)
        self.program = shaders.compileProgram(shaders.compileShader(_ID_VERTEX_SHADER, GL.GL_VERTEX_SHADER),
                                              shaders.compileShader(_ID_FRAGMENT_SHADER, GL.GL_FRAGMENT_SHADER),
                                              validate=False)
        self.u_projection = GL.glGetUniformLocation(self.program, "projection")
        self.vao = GL.glGenVertexArrays(1)
        GL.glBindVertexArray(self.vao)
        self.vbo, self.ebo = GL.glGenBuffers(2)
        GL.glBindBuffer(GL.GL_ARRAY_BUFFER, self.vbo)
        GL.glBufferData(GL.GL_ARRAY_BUFFER, 12 * self.n_vertices, None, GL.GL_STREAM_DRAW)
        GL.glEnableVertexAttribArray(0)
        GL.glVertexAttribPointer(0, 3, GL.GL_FLOAT, GL.GL_FALSE, 12, None)
        self.index = np.ascontiguousarray(triangles, dtype=np.uint32).reshape(-1)  # (3T,)
        GL.glBindBuffer(GL.GL_ELEMENT_ARRAY_BUFFER, self.ebo)
        GL.glBufferData(GL.GL_ELEMENT_ARRAY_BUFFER, self.index.nbytes, self.index, GL.GL_STATIC_DRAW)
        GL.glBindVertexArray(0)
        GL.glBindBuffer(GL.GL_ARRAY_BUFFER, 0)
        self.color_rb, self.depth_rb = GL.glGenRenderbuffers(2)
        GL.glBindRenderbuffer(GL.GL_RENDERBUFFER, self.color_rb)
        GL.glRenderbufferStorage(GL.GL_RENDERBUFFER, GL.GL_R32UI, size, size)
        GL.glBindRenderbuffer(GL.GL_RENDERBUFFER, self.depth_rb)
        GL.glRenderbufferStorage(GL.GL_RENDERBUFFER, GL.GL_DEPTH_COMPONENT24, size, size)
        GL.glBindRenderbuffer(GL.GL_RENDERBUFFER, 0)
        self.fbo = GL.glGenFramebuffers(1)
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, self.fbo)
        GL.glFramebufferRenderbuffer(GL.GL_FRAMEBUFFER, GL.GL_COLOR_ATTACHMENT0, GL.GL_RENDERBUFFER, self.color_rb)
        GL.glFramebufferRenderbuffer(GL.GL_FRAMEBUFFER, GL.GL_DEPTH_ATTACHMENT, GL.GL_RENDERBUFFER, self.depth_rb)
        status = GL.glCheckFramebufferStatus(GL.GL_FRAMEBUFFER)
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, 0)
        if status != GL.GL_FRAMEBUFFER_COMPLETE:
            raise RuntimeError(f"triangle-id framebuffer incomplete (status {status:#x})")
        self._ids = np.empty((size, size), np.uint32)  # read-back buffer, reused
        self._clear = np.zeros(4, np.uint32)

    def draw(self, verts_cam: np.ndarray, projection: np.ndarray) -> np.ndarray:
        """Triangle ids ``(H, W)`` int32 (-1 off-mesh), row 0 at the top."""
        from OpenGL import GL

        pos = np.ascontiguousarray(verts_cam, dtype=np.float32)
        if pos.shape != (self.n_vertices, 3):
            raise ValueError(f"verts_cam must be ({self.n_vertices}, 3), got {pos.shape}")
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, self.fbo)
        GL.glViewport(0, 0, self.size, self.size)
        GL.glDisable(GL.GL_BLEND)
        GL.glDisable(GL.GL_MULTISAMPLE)
        GL.glEnable(GL.GL_DEPTH_TEST)
        GL.glDepthMask(GL.GL_TRUE)
        GL.glDepthFunc(GL.GL_LESS)
        GL.glDepthRange(0.0, 1.0)
        GL.glEnable(GL.GL_CULL_FACE)
        GL.glCullFace(GL.GL_BACK)
        GL.glFrontFace(GL.GL_CCW)
        GL.glClearBufferuiv(GL.GL_COLOR, 0, self._clear)
        GL.glClearBufferfv(GL.GL_DEPTH, 0, np.ones(1, np.float32))
        GL.glUseProgram(self.program)
        # pyrender's convention: uniforms column-major, so pass the row-major matrix with transpose
        GL.glUniformMatrix4fv(self.u_projection, 1, GL.GL_TRUE, np.ascontiguousarray(projection, np.float32))
        GL.glBindBuffer(GL.GL_ARRAY_BUFFER, self.vbo)
        GL.glBufferSubData(GL.GL_ARRAY_BUFFER, 0, pos.nbytes, pos)
        GL.glBindBuffer(GL.GL_ARRAY_BUFFER, 0)
        GL.glBindVertexArray(self.vao)
        GL.glDrawElements(GL.GL_TRIANGLES, self.index.size, GL.GL_UNSIGNED_INT, None)
        GL.glBindVertexArray(0)
        GL.glUseProgram(0)
        GL.glBindFramebuffer(GL.GL_READ_FRAMEBUFFER, self.fbo)
        GL.glReadBuffer(GL.GL_COLOR_ATTACHMENT0)
        GL.glPixelStorei(GL.GL_PACK_ALIGNMENT, 4)
        GL.glReadPixels(0, 0, self.size, self.size, GL.GL_RED_INTEGER, GL.GL_UNSIGNED_INT, self._ids)
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, 0)
        # GL rows start at the bottom; id 0 = background -> -1
        return self._ids[::-1].astype(np.int32) - 1

    def delete(self) -> None:
        from OpenGL import GL

        GL.glDeleteFramebuffers(1, [self.fbo])
        GL.glDeleteRenderbuffers(2, [self.color_rb, self.depth_rb])
        GL.glDeleteBuffers(2, [self.vbo, self.ebo])
        GL.glDeleteVertexArrays(1, [self.vao])
        GL.glDeleteProgram(self.program)
