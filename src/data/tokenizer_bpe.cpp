// The BPE model of data/tokenizer.hpp: a word's characters (or their "<0xXX>" byte tokens, or unk) are merged
// pair by pair, always the adjacent pair of lowest merge rank, the leftmost one on ties, until no listed pair is
// left. A binary heap of candidate pairs over a linked list of symbols makes a word of n characters cost
// O(n log n); stale heap entries are recognised and dropped when popped, as the tokenizers library does.
#include <cstdio>
#include <queue>

#include "moescope/util/error.hpp"
#include "tokenizer_parts.hpp"

namespace moescope::detail {

namespace {

std::uint64_t pair_key(std::int32_t a, std::int32_t b) {
  return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) | static_cast<std::uint32_t>(b);
}

}  // namespace

BpeModel::BpeModel(std::vector<std::pair<std::string, std::int32_t>> vocab,
                   const std::vector<std::pair<std::string, std::string>>& merges, Options options, std::string where)
    : options_(std::move(options)), where_(std::move(where)) {
  tokens_.reserve(vocab.size());
  std::vector<std::int32_t> ids;
  ids.reserve(vocab.size());
  for (auto& [token, id] : vocab) {
    tokens_.push_back(std::move(token));
    ids.push_back(id);
  }
  // tokens_ is not resized again, so views into its strings stay valid
  vocab_.reserve(tokens_.size());
  by_id_.reserve(tokens_.size());
  for (std::size_t i = 0; i < tokens_.size(); ++i) {
    if (!vocab_.emplace(tokens_[i], ids[i]).second) {
      throw InputError(where_ + ".vocab: token '" + tokens_[i] + "' appears twice");
    }
    if (!by_id_.emplace(ids[i], i).second) {
      throw InputError(where_ + ".vocab: id " + std::to_string(ids[i]) + " is given to '" + tokens_[by_id_[ids[i]]] +
                       "' and '" + tokens_[i] + "'");
    }
    max_id_ = std::max(max_id_, ids[i]);
  }
  merges_.reserve(merges.size());
  std::string merged;
  for (std::size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [a, b] = merges[rank];
    const auto ia = vocab_.find(a), ib = vocab_.find(b);
    const std::string at = where_ + ".merges[" + std::to_string(rank) + "]";
    if (ia == vocab_.end()) throw InputError(at + ": '" + a + "' is not in the vocabulary");
    if (ib == vocab_.end()) throw InputError(at + ": '" + b + "' is not in the vocabulary");
    merged.assign(a).append(b);
    const auto im = vocab_.find(merged);
    if (im == vocab_.end()) throw InputError(at + ": the merged token '" + merged + "' is not in the vocabulary");
    // a pair listed twice keeps its later rank (the library collects the list into a hash map)
    merges_[pair_key(ia->second, ib->second)] = Merge{static_cast<std::uint32_t>(rank), im->second};
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    const auto it = vocab_.find(name);
    byte_ids_[static_cast<std::size_t>(b)] = it == vocab_.end() ? -1 : it->second;
  }
}

std::optional<std::int32_t> BpeModel::id(std::string_view token) const {
  const auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::token(std::int32_t id) const {
  const auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

std::int32_t BpeModel::unk_id() const {
  const auto it = vocab_.find(*options_.unk_token);
  if (it == vocab_.end()) {
    throw InputError(where_ + ".unk_token '" + *options_.unk_token + "' is not in the vocabulary");
  }
  return it->second;
}

void BpeModel::encode_word(std::string_view word, std::vector<std::int32_t>& out) const {
  if (word.empty()) return;
  if (options_.ignore_merges) {  // Llama 3: a word that is itself a token is taken whole
    const auto it = vocab_.find(word);
    if (it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  const bool cacheable = word.size() < kCacheMaxBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    const auto it = cache_.find(std::string(word));
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<std::int32_t> ids;
  merge_word(word, ids);
  out.insert(out.end(), ids.begin(), ids.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() < kCacheWords) cache_.emplace(std::string(word), std::move(ids));
  }
}

void BpeModel::merge_word(std::string_view word, std::vector<std::int32_t>& ids) const {
  // 1. Initial symbols: one per character; a character outside the vocabulary becomes its "<0xXX>" byte tokens
  //    (byte_fallback, when all of them exist), else unk (consecutive unks fused into one with fuse_unk), else
  //    nothing. As in the library, a pending unk is written only when the next in-vocabulary character or the
  //    end of the word comes, so byte tokens can precede an unk that stood before them.
  std::vector<std::int32_t> sym;
  sym.reserve(word.size());
  std::optional<std::int32_t> pending_unk;
  std::size_t i = 0;
  while (i < word.size()) {
    const std::size_t start = i;
    std::size_t len = utf8_length_at(word, i);
    if (len == 0) len = 1;  // not reached for well-formed input
    i += len;
    const std::string_view ch = word.substr(start, len);
    const auto it = vocab_.find(ch);
    if (it != vocab_.end()) {
      if (pending_unk) {
        sym.push_back(*pending_unk);
        pending_unk.reset();
      }
      sym.push_back(it->second);
      continue;
    }
    if (options_.byte_fallback) {
      bool all = true;
      for (char b : ch) all = all && byte_ids_[static_cast<unsigned char>(b)] >= 0;
      if (all) {
        for (char b : ch) sym.push_back(byte_ids_[static_cast<unsigned char>(b)]);
        continue;
      }
    }
    if (options_.unk_token) {
      if (pending_unk && !options_.fuse_unk) sym.push_back(*pending_unk);
      if (!pending_unk || !options_.fuse_unk) pending_unk = unk_id();
    }
  }
  if (pending_unk) sym.push_back(*pending_unk);

  // 2. Merges. prev/next link the live symbols; a heap entry (rank, position, merged id) is stale when its
  //    position was merged away or the pair there no longer merges into the same id.
  const auto n = static_cast<std::int32_t>(sym.size());
  std::vector<std::int32_t> prev(sym.size()), next(sym.size());
  std::vector<char> gone(sym.size(), 0);
  for (std::int32_t k = 0; k < n; ++k) {
    prev[static_cast<std::size_t>(k)] = k - 1;
    next[static_cast<std::size_t>(k)] = k + 1 < n ? k + 1 : -1;
  }
  struct Entry {
    std::uint32_t rank;
    std::int32_t pos;
    std::int32_t new_id;
  };
  auto later = [](const Entry& x, const Entry& y) { return x.rank != y.rank ? x.rank > y.rank : x.pos > y.pos; };
  std::priority_queue<Entry, std::vector<Entry>, decltype(later)> heap(later);
  auto candidate = [&](std::int32_t pos) {
    const std::int32_t nx = next[static_cast<std::size_t>(pos)];
    if (nx < 0) return;
    const auto it = merges_.find(pair_key(sym[static_cast<std::size_t>(pos)], sym[static_cast<std::size_t>(nx)]));
    if (it != merges_.end()) heap.push(Entry{it->second.rank, pos, it->second.new_id});
  };
  for (std::int32_t k = 0; k + 1 < n; ++k) candidate(k);
  while (!heap.empty()) {
    const Entry top = heap.top();
    heap.pop();
    const auto p = static_cast<std::size_t>(top.pos);
    if (gone[p] || next[p] < 0) continue;
    const auto r = static_cast<std::size_t>(next[p]);
    const auto it = merges_.find(pair_key(sym[p], sym[r]));
    if (it == merges_.end() || it->second.new_id != top.new_id) continue;
    sym[p] = top.new_id;
    gone[r] = 1;
    next[p] = next[r];
    if (next[r] >= 0) prev[static_cast<std::size_t>(next[r])] = top.pos;
    if (prev[p] >= 0) candidate(prev[p]);
    candidate(top.pos);
  }
  for (std::size_t k = 0; k < sym.size(); ++k) {
    if (!gone[k]) ids.push_back(sym[k]);
  }
}

}  // namespace moescope::detail
