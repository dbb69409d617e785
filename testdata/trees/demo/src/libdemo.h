#ifndef LIBDEMO_H
#define LIBDEMO_H
const char *demo_greeting(void);
#endif
