// bertlet — header-only BERT-family text encoders for CPUs. The public API, and nothing else.
//
//   #include <bertlet/bertlet.hpp>
//   auto model = bertlet::embedder::load("models/all-MiniLM-L6-v2.bertlet");
//   std::vector<float> v = model.embed("A man is playing a guitar.");
#pragma once

#include "bertlet/error.hpp"
#include "bertlet/blob/reader.hpp"
#include "bertlet/text/tokenizer.hpp"
#include "bertlet/model/config.hpp"
#include "bertlet/model/encoder.hpp"
#include "bertlet/heads/pooling.hpp"
#include "bertlet/model/embedder.hpp"

#define BERTLET_VERSION_MAJOR 0
#define BERTLET_VERSION_MINOR 1
#define BERTLET_VERSION_PATCH 0
