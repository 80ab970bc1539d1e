"""Import TensorFlow so that it can share a process with an OpenGL driver built on LLVM.

TensorFlow's shared libraries carry their own copy of LLVM and export its symbols. Mesa's
OpenGL drivers (llvmpipe, radeonsi, ...) link the system ``libLLVM``. When both end up in
one process, each resolves LLVM symbols to the other's copy and the process crashes:
``import tensorflow`` after napari has drawn its canvas segfaults, and napari drawing
after TensorFlow was imported segfaults or aborts at exit (tensorflow/tensorflow#109933).

``import_tensorflow`` avoids this when it can. In a process that uses Qt it first makes
sure the GL driver (and so its libLLVM) is loaded: through a throwaway GL context when a
Qt application exists (main thread only), else by loading Mesa's DRI driver library. It
then imports TensorFlow with ``RTLD_DEEPBIND`` so that TensorFlow binds to its own LLVM
while the driver keeps the system one. In a process without Qt (the CLI), or where no
libLLVM is found, it is a plain ``import tensorflow``.
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys
import threading

_QT_MODULES = ("PyQt5", "PyQt6", "PySide2", "PySide6", "napari", "vispy")


def llvm_loaded() -> bool:
    """Whether a system libLLVM (typically pulled in by an OpenGL driver) is loaded."""
    try:
        with open("/proc/self/maps") as fh:
            return "/libLLVM" in fh.read()
    except OSError:
        return False


def _mesa_driver_paths() -> list[str]:
    dirs = [d for d in os.environ.get("LIBGL_DRIVERS_PATH", "").split(os.pathsep) if d]
    dirs += sorted(glob.glob("/usr/lib/*/dri")) + ["/usr/lib64/dri", "/usr/lib/dri"]
    return [os.path.join(d, "swrast_dri.so") for d in dirs if os.path.isfile(os.path.join(d, "swrast_dri.so"))]


def _load_gl_driver() -> None:
    """In a process using Qt or napari, load the GL driver before TensorFlow (see module doc)."""
    if not any(m in sys.modules for m in _QT_MODULES):
        return
    app = None
    try:
        from qtpy.QtGui import QGuiApplication

        app = QGuiApplication.instance()
    except Exception:
        pass
    if app is None:  # no GUI yet: load Mesa's driver library itself, if there is one
        for path in _mesa_driver_paths():
            try:
                ctypes.CDLL(path)
                return
            except OSError:
                continue
        return
    if threading.current_thread() is not threading.main_thread():
        return  # GL objects belong to the GUI thread; a shown viewer has loaded the driver anyway
    try:
        from qtpy.QtGui import QOffscreenSurface, QOpenGLContext

        ctx = QOpenGLContext()
        if not ctx.create():
            return
        surface = QOffscreenSurface()
        surface.setFormat(ctx.format())
        surface.create()
        if ctx.makeCurrent(surface):
            ctx.doneCurrent()
        surface.destroy()
    except Exception:  # no GL at all: nothing can clash
        return


def import_tensorflow():
    """Import TensorFlow (once), avoiding the LLVM clash with OpenGL drivers (see module doc).

    Also turns oneDNN on by default (it is off in some builds; ~1.1-1.8x faster on CPU)
    and quiets TensorFlow's C++ log, unless the user set these variables.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    deepbind = getattr(os, "RTLD_DEEPBIND", 0)
    if not sys.platform.startswith("linux") or not deepbind:
        import tensorflow

        return tensorflow
    if not llvm_loaded():
        _load_gl_driver()
    if not llvm_loaded():
        import tensorflow

        return tensorflow
    flags = sys.getdlopenflags()
    sys.setdlopenflags(os.RTLD_NOW | deepbind)
    try:
        import tensorflow
    finally:
        sys.setdlopenflags(flags)
    return tensorflow
