// The BPE model of data/tokenizer.hpp: a word's characters (or their "<0xXX>" byte tokens, or unk) are merged
// pair by pair, always the adjacent pair of lowest merge rank, the leftmost one on ties, until no listed pair is
// left. A binary heap of candidate pairs over a linked list of symbols makes a word of n characters cost
// O(n log n); stale heap entries are recognised and dropped when popped, as the tokenizers library does.
#include <algorithm>
#include <cstdio>
#include <functional>

#include "moescope/util/error.hpp"
#include "tokenizer_parts.hpp"

namespace moescope::detail {

// ------------------------------------------------------------------------------------------- tables

void FlatMap64::reserve(std::size_t n) {
  std::size_t cap = 16;
  while (cap < 2 * n) cap *= 2;
  if (cap <= slots_.size()) return;
  std::vector<Slot> old = std::move(slots_);
  slots_.assign(cap, Slot{});
  mask_ = cap - 1;
  shift_ = 64;
  for (std::size_t c = cap; c > 1; c /= 2) --shift_;
  count_ = 0;
  for (const Slot& s : old) {
    if (s.key != kEmpty) set(s.key, s.value);
  }
}

void FlatMap64::set(std::uint64_t key, std::uint64_t value) {
  if (2 * (count_ + 1) > slots_.size()) reserve(count_ + 1 > 8 ? 2 * (count_ + 1) : 16);
  for (std::size_t i = slot_of(key);; i = (i + 1) & mask_) {
    Slot& s = slots_[i];
    if (s.key == key) {
      s.value = value;
      return;
    }
    if (s.key == kEmpty) {
      s.key = key;
      s.value = value;
      ++count_;
      return;
    }
  }
}

bool WordCache::find(std::string_view word, std::size_t hash, std::vector<std::int32_t>& out) const {
  if (slots_.empty()) return false;
  const std::size_t mask = slots_.size() - 1;
  for (std::size_t i = hash & mask;; i = (i + 1) & mask) {
    const Slot& s = slots_[i];
    if (!s.used) return false;
    if (s.hash == hash && s.key_len == word.size() && keys_.compare(s.key, s.key_len, word) == 0) {
      out.insert(out.end(), ids_.begin() + s.ids, ids_.begin() + s.ids + s.ids_len);
      return true;
    }
  }
}

void WordCache::insert(std::string_view word, std::size_t hash, const std::int32_t* ids, std::size_t n) {
  if (count_ >= max_words_) return;
  if (slots_.empty()) {
    std::size_t cap = 16;
    while (cap < 2 * max_words_) cap *= 2;
    slots_.assign(cap, Slot{});
  }
  const std::size_t mask = slots_.size() - 1;
  for (std::size_t i = hash & mask;; i = (i + 1) & mask) {
    Slot& s = slots_[i];
    if (!s.used) {
      s = Slot{hash, static_cast<std::uint32_t>(keys_.size()), static_cast<std::uint32_t>(word.size()),
               static_cast<std::uint32_t>(ids_.size()), static_cast<std::uint32_t>(n), true};
      keys_.append(word);
      ids_.insert(ids_.end(), ids, ids + n);
      ++count_;
      return;
    }
    if (s.hash == hash && s.key_len == word.size() && keys_.compare(s.key, s.key_len, word) == 0) return;
  }
}

// ----------------------------------------------------------------------------------------------- BPE

namespace {

std::uint64_t pair_key(std::int32_t a, std::int32_t b) {
  return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) | static_cast<std::uint32_t>(b);
}

// Per-thread scratch for merging one word (merge() is not re-entrant).
struct MergeScratch {
  std::vector<std::int32_t> sym, prev, next;
  std::vector<char> gone;
  struct Entry {
    std::uint64_t order;  // rank << 32 | position: the heap's key, smallest first
    std::int32_t new_id;
  };
  std::vector<Entry> heap;
};

MergeScratch& scratch() {
  thread_local MergeScratch s;
  return s;
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
  bmp_ids_.assign(0x10000, -1);
  for (std::size_t i = 0; i < tokens_.size(); ++i) {
    const std::string& t = tokens_[i];
    if (!vocab_.emplace(t, ids[i]).second) throw InputError(where_ + ".vocab: token '" + printable(t) + "' appears twice");
    if (!by_id_.emplace(ids[i], i).second) {
      throw InputError(where_ + ".vocab: id " + std::to_string(ids[i]) + " is given to '" +
                       printable(tokens_[by_id_[ids[i]]]) + "' and '" + printable(t) + "'");
    }
    max_id_ = std::max(max_id_, ids[i]);
    if (!t.empty() && utf8_length_at(t, 0) == t.size()) {
      std::size_t k = 0;
      const char32_t c = utf8_next(t, k);
      if (c < 0x10000) bmp_ids_[c] = ids[i];
    }
  }
  merges_.reserve(merges.size());
  std::string merged;
  for (std::size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [a, b] = merges[rank];
    const auto ia = vocab_.find(a), ib = vocab_.find(b);
    const std::string at = where_ + ".merges[" + std::to_string(rank) + "]";
    if (ia == vocab_.end()) throw InputError(at + ": '" + printable(a) + "' is not in the vocabulary");
    if (ib == vocab_.end()) throw InputError(at + ": '" + printable(b) + "' is not in the vocabulary");
    merged.assign(a).append(b);
    const auto im = vocab_.find(merged);
    if (im == vocab_.end()) throw InputError(at + ": the merged token '" + printable(merged) + "' is not in the vocabulary");
    // a pair listed twice keeps its later rank (the library collects the list into a hash map)
    merges_.set(pair_key(ia->second, ib->second),
                (static_cast<std::uint64_t>(rank) << 32) | static_cast<std::uint32_t>(im->second));
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    const auto it = vocab_.find(name);
    byte_ids_[static_cast<std::size_t>(b)] = it == vocab_.end() ? -1 : it->second;
  }
  // byte-level fast path: the 256 byte characters as ids, and the tokens written in them as raw bytes
  byte_level_complete_ = true;
  for (int b = 0; b < 256; ++b) {
    const auto it = vocab_.find(byte_level_chars()[static_cast<std::size_t>(b)]);
    byte_level_ids_[static_cast<std::size_t>(b)] = it == vocab_.end() ? -1 : it->second;
    byte_level_complete_ = byte_level_complete_ && it != vocab_.end();
  }
  if (byte_level_complete_ && options_.ignore_merges) {
    raw_vocab_.reserve(tokens_.size());
    for (std::size_t i = 0; i < tokens_.size(); ++i) {
      std::string raw;
      bool all = true;
      for (std::size_t k = 0; k < tokens_[i].size() && all;) {
        const int b = byte_level_byte(utf8_next(tokens_[i], k));
        all = b >= 0;
        raw.push_back(static_cast<char>(b));
      }
      if (all && !raw.empty()) raw_vocab_.emplace(std::move(raw), ids[i]);
    }
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
    throw InputError(where_ + ".unk_token '" + printable(*options_.unk_token) + "' is not in the vocabulary");
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
  const std::size_t hash = cacheable ? std::hash<std::string_view>{}(word) : 0;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.find(word, hash, out)) return;
  }
  std::vector<std::int32_t>& sym = scratch().sym;
  sym.clear();
  initial_symbols(word, sym);
  merge(sym);
  out.insert(out.end(), sym.begin(), sym.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    cache_.insert(word, hash, sym.data(), sym.size());
  }
}

void BpeModel::encode_bytes(std::string_view raw, std::vector<std::int32_t>& out) const {
  if (raw.empty()) return;
  if (!byte_level_complete_) {  // some byte character is no token: the general path handles unk / fallback
    std::string mapped;
    for (char b : raw) mapped += byte_level_chars()[static_cast<unsigned char>(b)];
    encode_word(mapped, out);
    return;
  }
  if (options_.ignore_merges) {
    const auto it = raw_vocab_.find(std::string(raw));
    if (it != raw_vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  const bool cacheable = raw.size() < kCacheMaxBytes;
  const std::size_t hash = cacheable ? std::hash<std::string_view>{}(raw) : 0;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (raw_cache_.find(raw, hash, out)) return;
  }
  std::vector<std::int32_t>& sym = scratch().sym;
  sym.clear();
  for (char b : raw) sym.push_back(byte_level_ids_[static_cast<unsigned char>(b)]);
  merge(sym);
  out.insert(out.end(), sym.begin(), sym.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    raw_cache_.insert(raw, hash, sym.data(), sym.size());
  }
}

void BpeModel::initial_symbols(std::string_view word, std::vector<std::int32_t>& sym) const {
  // One symbol per character; a character outside the vocabulary becomes its "<0xXX>" byte tokens
  // (byte_fallback, when all of them exist), else unk (consecutive unks fused into one with fuse_unk), else
  // nothing. As in the library, a pending unk is written only when the next in-vocabulary character or the
  // end of the word comes, so byte tokens can precede an unk that stood before them.
  std::optional<std::int32_t> pending_unk;
  std::size_t i = 0;
  while (i < word.size()) {
    const std::size_t start = i;
    std::size_t len = utf8_length_at(word, i);
    if (len == 0) len = 1;  // not reached for well-formed input
    std::int32_t id = -1;
    if (len < 4) {
      std::size_t k = i;
      id = bmp_ids_[utf8_next(word, k)];
    } else {
      const auto it = vocab_.find(word.substr(start, len));
      if (it != vocab_.end()) id = it->second;
    }
    i += len;
    if (id >= 0) {
      if (pending_unk) {
        sym.push_back(*pending_unk);
        pending_unk.reset();
      }
      sym.push_back(id);
      continue;
    }
    if (options_.byte_fallback) {
      bool all = true;
      for (std::size_t k = start; k < i; ++k) all = all && byte_ids_[static_cast<unsigned char>(word[k])] >= 0;
      if (all) {
        for (std::size_t k = start; k < i; ++k) sym.push_back(byte_ids_[static_cast<unsigned char>(word[k])]);
        continue;
      }
    }
    if (options_.unk_token) {
      if (pending_unk && !options_.fuse_unk) sym.push_back(*pending_unk);
      if (!pending_unk || !options_.fuse_unk) pending_unk = unk_id();
    }
  }
  if (pending_unk) sym.push_back(*pending_unk);
}

void BpeModel::merge(std::vector<std::int32_t>& sym) const {
  // prev/next link the live symbols; a heap entry (rank, position, merged id) is stale when its position was
  // merged away or the pair there no longer merges into the same id.
  if (sym.size() < 2) return;
  MergeScratch& sc = scratch();
  const auto n = static_cast<std::int32_t>(sym.size());
  sc.prev.resize(sym.size());
  sc.next.resize(sym.size());
  sc.gone.assign(sym.size(), 0);
  for (std::int32_t k = 0; k < n; ++k) {
    sc.prev[static_cast<std::size_t>(k)] = k - 1;
    sc.next[static_cast<std::size_t>(k)] = k + 1 < n ? k + 1 : -1;
  }
  using Entry = MergeScratch::Entry;
  auto later = [](const Entry& x, const Entry& y) { return x.order > y.order; };
  auto& heap = sc.heap;
  heap.clear();
  auto entry = [&](std::int32_t pos, Entry& e) {
    const std::int32_t nx = sc.next[static_cast<std::size_t>(pos)];
    if (nx < 0) return false;
    const std::uint64_t* m = merges_.find(pair_key(sym[static_cast<std::size_t>(pos)], sym[static_cast<std::size_t>(nx)]));
    if (!m) return false;
    e.order = (*m & 0xFFFFFFFF00000000ull) | static_cast<std::uint32_t>(pos);
    e.new_id = static_cast<std::int32_t>(*m & 0xFFFFFFFFu);
    return true;
  };
  auto candidate = [&](std::int32_t pos) {
    Entry e;
    if (!entry(pos, e)) return;
    heap.push_back(e);
    std::push_heap(heap.begin(), heap.end(), later);
  };
  for (std::int32_t k = 0; k + 1 < n; ++k) {
    Entry e;
    if (entry(k, e)) heap.push_back(e);
  }
  std::make_heap(heap.begin(), heap.end(), later);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    const Entry top = heap.back();
    heap.pop_back();
    const auto pos = static_cast<std::int32_t>(top.order & 0xFFFFFFFFu);
    const auto p = static_cast<std::size_t>(pos);
    if (sc.gone[p] || sc.next[p] < 0) continue;
    const auto r = static_cast<std::size_t>(sc.next[p]);
    const std::uint64_t* m = merges_.find(pair_key(sym[p], sym[r]));
    if (!m || static_cast<std::int32_t>(*m & 0xFFFFFFFFu) != top.new_id) continue;
    sym[p] = top.new_id;
    sc.gone[r] = 1;
    sc.next[p] = sc.next[r];
    if (sc.next[r] >= 0) sc.prev[static_cast<std::size_t>(sc.next[r])] = pos;
    if (sc.prev[p] >= 0) candidate(sc.prev[p]);
    candidate(pos);
  }
  std::size_t w = 0;
  for (std::size_t k = 0; k < sym.size(); ++k) {
    if (!sc.gone[k]) sym[w++] = sym[k];
  }
  sym.resize(w);
}

}  // namespace moescope::detail
