/* evr/evr.h: the umbrella header, the only include a user needs. */
#ifndef EVR_EVR_H
#define EVR_EVR_H

#include "evr/version.h"
#include "evr/error.h"
#include "evr/loop.h"
#include "evr/io.h"
#include "evr/defer.h"
#include "evr/timer.h"
#include "evr/async.h"
#include "evr/signal.h"
#include "evr/work.h"
#include "evr/addr.h"
#include "evr/tcp.h"

#endif
