/* libdemo 1.0: the one function the extension needs, and where it was loaded from. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>

#include "libdemo.h"

const char *demo_greeting(void) {
  static char text[4096];
  Dl_info info;
  const char *file = "an unknown file";
  if (dladdr((void *)demo_greeting, &info) != 0 && info.dli_fname != NULL) {
    file = info.dli_fname;
  }
  snprintf(text, sizeof text, "hello from libdemo 1.0 (%s)", file);
  return text;
}
