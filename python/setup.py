"""Build the inferd Python package: the C extension inferd._inferd over the
project's static libraries (built here with CMake, or taken from an existing
build with INFERD_CMAKE_BUILD=DIR), and the pure-Python modules.

    pip install --no-build-isolation ./python     # offline, Debian's setuptools
"""
import os
import subprocess

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# Lowest layer last, as the linker reads static libraries.
LAYERS = ("client", "pipeline", "runtime", "engine", "gguf", "tensor", "base")


class CMakeBuildExt(build_ext):
    """Build the C libraries with the project's CMake, then the extension."""

    def run(self):
        build = os.environ.get("INFERD_CMAKE_BUILD")
        if not build:
            build = os.path.join(os.path.abspath(self.build_temp), "cmake")
            subprocess.check_call(["cmake", "-S", ROOT, "-B", build,
                                   "-DCMAKE_BUILD_TYPE=Release"])
        targets = ["inferd_" + n for n in LAYERS]
        subprocess.check_call(["cmake", "--build", build, "-j", str(os.cpu_count() or 2),
                               "--target", *targets])
        for ext in self.extensions:
            ext.extra_objects = [os.path.join(build, "src", "libinferd_%s.a" % n)
                                 for n in LAYERS]
        self.force = True  # the libraries may have changed under the same sources
        super().run()


# Built inside an existing CMake build: keep setuptools' files there, out
# of the source tree and apart from other builds (a sanitizer build's).
OPTIONS = {}
if os.environ.get("INFERD_CMAKE_BUILD"):
    base = os.path.join(os.path.abspath(os.environ["INFERD_CMAKE_BUILD"]), "python")
    os.makedirs(base, exist_ok=True)
    OPTIONS = {"build": {"build_base": base}, "egg_info": {"egg_base": base}}


setup(
    name="inferd",
    version="0.5.0",
    description="inferd: in-process models, zero-copy tensors and clients",
    packages=["inferd"],
    ext_modules=[Extension(
        "inferd._inferd",
        sources=["src/_inferd.c", "src/model.c", "src/client.c", "src/channel.c",
                 "src/pipeline.c"],
        depends=["src/ext.h"],
        include_dirs=[os.path.join(ROOT, "include")],
        libraries=["jansson", "curl", "pcre2-8", "m"],
        extra_compile_args=["-std=c11", "-O2", "-Wall", "-Wextra"],
    )],
    cmdclass={"build_ext": CMakeBuildExt},
    options=OPTIONS,
    python_requires=">=3.11",
)
