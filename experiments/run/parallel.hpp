// Threads within one run: the batch is cut into blocks of a fixed size that does not depend on the
// thread count, and threads take whole blocks. A block's rows are computed by the same calls
// whichever thread takes it, so results are bitwise identical for any thread count (the samplers
// and solvers are row-wise, and their noise and probes are keyed by the global row index).
#pragma once

#include "core/state.hpp"

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace diffode {

struct BlockRange {
  Index index, begin, end;  // block number; rows [begin, end)
  Index rows() const { return end - begin; }
};

inline std::vector<BlockRange> make_blocks(Index rows, Index block_rows) {
  std::vector<BlockRange> blocks;
  if (block_rows < 1) block_rows = rows > 0 ? rows : 1;
  for (Index b = 0, begin = 0; begin < rows; ++b, begin += block_rows) blocks.push_back({b, begin, std::min(rows, begin + block_rows)});
  return blocks;
}

// Calls work(block) for every block on up to `threads` threads (1: the calling thread alone).
// The first exception thrown by any block is rethrown once all threads have stopped.
template <class Work>
void for_each_block(const std::vector<BlockRange>& blocks, int threads, Work&& work) {
  const int n = std::max(1, std::min<int>(threads, static_cast<int>(blocks.size())));
  if (n == 1) {
    for (const auto& b : blocks) work(b);
    return;
  }
  std::atomic<std::size_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto worker = [&] {
    for (std::size_t i = next++; i < blocks.size(); i = next++) {
      try {
        work(blocks[i]);
      } catch (...) {
        std::lock_guard lock(error_mutex);
        if (!error) error = std::current_exception();
        next = blocks.size();
      }
    }
  };
  std::vector<std::thread> pool;
  for (int i = 1; i < n; ++i) pool.emplace_back(worker);
  worker();
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace diffode
