// npid/npid.h -- umbrella header for libnpid_cuda's public API.
#pragma once

#include "npid/augment.h"
#include "npid/context.h"
#include "npid/data.h"
#include "npid/device.h"
#include "npid/error.h"
#include "npid/knn.h"
#include "npid/linear_eval.h"
#include "npid/loader.h"
#include "npid/memory_bank.h"
#include "npid/nce.h"
#include "npid/resnet.h"
#include "npid/sampler.h"
#include "npid/softmax.h"
#include "npid/tensor.h"
#include "npid/version.h"
