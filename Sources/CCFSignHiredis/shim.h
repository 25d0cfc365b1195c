#ifndef CCFSIGN_HIREDIS_SHIM_H
#define CCFSIGN_HIREDIS_SHIM_H
/* hiredis 0.14 (Debian 12). Only the Argv command forms are callable from Swift. */
#include <hiredis/hiredis.h>
#include <poll.h>
#endif
