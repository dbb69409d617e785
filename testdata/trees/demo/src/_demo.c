/* The extension module demo._demo: greeting() returns libdemo's greeting. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "libdemo.h"

static PyObject *greeting(PyObject *self, PyObject *args) {
  (void)self;
  (void)args;
  return PyUnicode_FromString(demo_greeting());
}

static PyMethodDef methods[] = {
    {"greeting", greeting, METH_NOARGS, "libdemo's greeting."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_demo", "Calls into libdemo.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__demo(void) { return PyModule_Create(&module); }
