// Results files are written whole or not at all: under a temporary name beside the target, then
// renamed over it, so a reader (or a crash) never sees a torn file and a refused or failed write
// leaves an earlier result as it was. The target is checked before any work is done.
#pragma once

#include "experiments/run/config.hpp"

#include <filesystem>
#include <functional>

namespace diffode {

class Hdf5File;

// Checks that `path` can be written (not empty, not a directory, its folder creatable and writable)
// by creating and removing a probe file there; throws ConfigError naming `table`'s `key`. Creates
// the folder when it is missing (only after every other check has passed: call it last).
void check_output_path(const ConfigTable& table, std::string_view key, const std::filesystem::path& path);

// Refuses a run whose arrays would need more than this machine's memory: `bytes` is the caller's
// estimate of its peak; the message names `key` and states both figures.
void check_memory(const ConfigTable& table, std::string_view key, double bytes);

// Writes `path` through `write` on a temporary file, then renames it over `path`. The temporary file
// is removed when `write` throws (the exception then propagates).
void write_atomically(const std::filesystem::path& path, const std::function<void(Hdf5File&)>& write);

}  // namespace diffode
