// WordPieceTokenizer: HF BertTokenizerFast behaviour (see tokenizer.h for the contract and the
// deliberate differences). The pipeline of one text, as in HF:
//   UTF-8 -> code points -> split out special tokens written in the text -> for each piece:
//   clean -> space around CJK -> NFD and drop Mn -> lowercase -> split on whitespace and
//   punctuation -> WordPiece (greedy longest match first, "##" inside a word).
#include "edgetune/data/tokenizer.h"

#include <utf8proc.h>

#include <algorithm>
#include <array>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "bert_unicode.h"
#include "edgetune/data/error.h"
#include "io.h"
#include "utf8.h"

namespace edgetune::data {
namespace {

// What BertNormalizer's clean_text and the pre-tokenizer make of each ASCII character, looked up
// instead of the range tables on the hot path.
enum AsciiClass : uint8_t { kKeep, kDrop, kSpace, kPunct };

constexpr std::array<uint8_t, 128> make_ascii_classes() {
  std::array<uint8_t, 128> c{};
  for (int i = 0; i < 128; ++i) {
    if (i == '\t' || i == '\n' || i == '\r' || i == ' ') {
      c[i] = kSpace;
    } else if (i < 0x20 || i == 0x7F) {
      c[i] = kDrop;  // Cc; U+0000 is dropped too
    } else if ((i >= 33 && i <= 47) || (i >= 58 && i <= 64) || (i >= 91 && i <= 96) ||
               (i >= 123 && i <= 126)) {
      c[i] = kPunct;
    } else {
      c[i] = kKeep;
    }
  }
  return c;
}
constexpr std::array<uint8_t, 128> kAsciiClass = make_ascii_classes();

constexpr char32_t kDottedCapitalI = 0x130;  // İ
// HF's NFD tables (the unicode-normalization-alignments crate) predate Unicode 13, whose one new
// canonical decomposition is this Dives Akuru vowel sign: HF leaves it whole.
constexpr char32_t kDivesAkuruVowelSignO = 0x11938;
constexpr char32_t kCombiningDotAbove = 0x307;

bool is_continuation_byte(char c) {
  return (static_cast<unsigned char>(c) & 0xC0) == 0x80;
}

uint64_t hash_bytes(std::string_view s) {
  // FNV-1a, then a final avalanche so that the low bits used for the slot index are well mixed.
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  return h;
}

// Scratch buffers reused by every call on a thread, so that encoding a line allocates only its
// result. The tokenizer itself stays immutable and can be shared between threads.
struct Scratch {
  std::u32string code_points;
  std::u32string normalized;
  std::u32string decomposed;
  std::string word;
};
Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

const char* const kSpecialTokens[] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};

}  // namespace

// ------------------------------------------------------------------------------ PieceTable

void WordPieceTokenizer::PieceTable::grow() {
  std::vector<Slot> old = std::move(slots_);
  slots_.assign(old.empty() ? 1024 : old.size() * 2, Slot{});
  const size_t mask = slots_.size() - 1;
  for (const Slot& s : old) {
    if (s.id < 0) continue;
    size_t i = s.hash & mask;
    while (slots_[i].id >= 0) i = (i + 1) & mask;
    slots_[i] = s;
  }
}

void WordPieceTokenizer::PieceTable::insert(std::string_view key, int32_t id) {
  if ((used_ + 1) * 2 > slots_.size()) grow();
  const uint64_t h = hash_bytes(key);
  const size_t mask = slots_.size() - 1;
  size_t i = h & mask;
  while (slots_[i].id >= 0) {
    const Slot& s = slots_[i];
    if (s.hash == h && std::string_view(bytes_).substr(s.offset, s.length) == key) {
      slots_[i].id = id;  // a token on two lines: the later line wins, as in HF
      return;
    }
    i = (i + 1) & mask;
  }
  slots_[i] = Slot{h, static_cast<uint32_t>(bytes_.size()), static_cast<uint32_t>(key.size()), id};
  bytes_.append(key);
  ++used_;
  max_key_bytes_ = std::max(max_key_bytes_, key.size());
}

int32_t WordPieceTokenizer::PieceTable::find(std::string_view key) const {
  if (slots_.empty()) return -1;
  const uint64_t h = hash_bytes(key);
  const size_t mask = slots_.size() - 1;
  for (size_t i = h & mask;; i = (i + 1) & mask) {
    const Slot& s = slots_[i];
    if (s.id < 0) return -1;
    if (s.hash == h && s.length == key.size() &&
        std::string_view(bytes_).substr(s.offset, s.length) == key) {
      return s.id;
    }
  }
}

// ------------------------------------------------------------------------- construction

WordPieceTokenizer::WordPieceTokenizer(Vocab vocab, TokenizerOptions options)
    : vocab_(std::move(vocab)),
      options_(options),
      strip_accents_(options.strip_accents.value_or(options.do_lower_case)) {
  if (options_.max_input_chars_per_word < 1) {
    throw std::invalid_argument("TokenizerOptions::max_input_chars_per_word must be >= 1");
  }
  int32_t* ids[] = {&pad_id_, &unk_id_, &cls_id_, &sep_id_, &mask_id_};
  for (size_t i = 0; i < 5; ++i) {
    const auto id = vocab_.id(kSpecialTokens[i]);
    if (!id) {
      throw DataError(vocab_.source(),
                      std::string("no line holds the special token ") + kSpecialTokens[i] +
                          " (a BERT vocabulary has [PAD] [UNK] [CLS] [SEP] [MASK])");
    }
    *ids[i] = *id;
  }
  for (int32_t id = 0; id < vocab_.size(); ++id) {
    const std::string_view t = vocab_.token(id);
    if (t.size() > 2 && t.substr(0, 2) == "##") continuation_.insert(t.substr(2), id);
  }
}

// ------------------------------------------------------------------------------ pipeline

template <class Emit>
void WordPieceTokenizer::for_each_word(const char32_t* begin, const char32_t* end,
                                       Emit&& emit) const {
  Scratch& s = scratch();
  std::u32string& norm = s.normalized;
  norm.clear();
  bool ascii_only = true;

  // clean_text and handle_chinese_chars.
  for (const char32_t* p = begin; p != end; ++p) {
    const char32_t cp = *p;
    if (cp < 0x80) {
      const uint8_t c = kAsciiClass[cp];
      if (c == kDrop) continue;
      norm.push_back(c == kSpace ? U' ' : cp);
      continue;
    }
    if (cp == 0xFFFD || bert::is_other(cp)) continue;
    if (bert::is_whitespace(cp)) {
      norm.push_back(U' ');
      continue;
    }
    ascii_only = false;
    if (options_.tokenize_chinese_chars && bert::is_chinese(cp)) {
      norm.push_back(U' ');
      norm.push_back(cp);
      norm.push_back(U' ');
      continue;
    }
    norm.push_back(cp);
  }

  // strip_accents: NFD (decompose each code point, then put combining marks in canonical order),
  // then drop nonspacing marks.
  if (strip_accents_ && !ascii_only) {
    std::u32string& dec = s.decomposed;
    dec.clear();
    for (const char32_t cp : norm) {
      if (cp < 0x80 || cp == kDivesAkuruVowelSignO) {
        dec.push_back(cp);
        continue;
      }
      utf8proc_int32_t buffer[32];
      int last_boundclass = 0;
      const utf8proc_ssize_t n = utf8proc_decompose_char(static_cast<utf8proc_int32_t>(cp), buffer,
                                                         32, UTF8PROC_DECOMPOSE, &last_boundclass);
      if (n < 0 || n > 32) {
        dec.push_back(cp);
        continue;
      }
      for (utf8proc_ssize_t k = 0; k < n; ++k) dec.push_back(static_cast<char32_t>(buffer[k]));
    }
    // Canonical ordering: each run of code points with a non-zero combining class is sorted
    // (stably) by that class. Insertion sort: runs are a few marks long.
    auto ccc = [](char32_t cp) -> int {
      return cp < 0x300 ? 0
                        : utf8proc_get_property(static_cast<utf8proc_int32_t>(cp))->combining_class;
    };
    for (size_t i = 1; i < dec.size(); ++i) {
      const int ci = ccc(dec[i]);
      if (ci == 0) continue;
      size_t j = i;
      const char32_t cp = dec[i];
      while (j > 0) {
        const int cj = ccc(dec[j - 1]);
        if (cj == 0 || cj <= ci) break;
        dec[j] = dec[j - 1];
        --j;
      }
      dec[j] = cp;
    }
    norm.clear();
    for (const char32_t cp : dec) {
      if (cp >= 0x80 && bert::is_nonspacing_mark(cp)) continue;
      norm.push_back(cp);
    }
  }

  // lowercase: per code point, as Rust's char::to_lowercase (no final-sigma rule); İ is the one
  // code point whose lowercase is two code points.
  if (options_.do_lower_case) {
    bool expands = false;
    for (char32_t& cp : norm) {
      if (cp < 0x80) {
        if (cp >= 'A' && cp <= 'Z') cp += 'a' - 'A';
      } else if (cp == kDottedCapitalI) {
        expands = true;
      } else {
        cp = static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(cp)));
      }
    }
    if (expands) {
      std::u32string& out = s.decomposed;
      out.clear();
      for (const char32_t cp : norm) {
        if (cp == kDottedCapitalI) {
          out.push_back(U'i');
          out.push_back(kCombiningDotAbove);
        } else {
          out.push_back(cp);
        }
      }
      norm.swap(out);
    }
  }

  // Pre-tokenize: whitespace ends a word, punctuation is a word of its own.
  std::string& word = s.word;
  word.clear();
  size_t chars = 0;
  auto flush = [&] {
    if (chars > 0) emit(std::string_view(word), chars);
    word.clear();
    chars = 0;
  };
  for (const char32_t cp : norm) {
    bool space, punct;
    if (cp < 0x80) {
      const uint8_t c = kAsciiClass[cp];
      space = c == kSpace || cp == '\v' || cp == '\f';
      punct = c == kPunct;
    } else {
      space = bert::is_whitespace(cp);
      punct = !space && bert::is_punctuation(cp);
    }
    if (space) {
      flush();
    } else if (punct) {
      flush();
      utf8::append(cp, word);
      chars = 1;
      flush();
    } else {
      utf8::append(cp, word);
      ++chars;
    }
  }
  flush();
}

void WordPieceTokenizer::word_piece(std::string_view word, size_t chars,
                                    std::vector<int32_t>& out) const {
  if (chars > static_cast<size_t>(options_.max_input_chars_per_word)) {
    out.push_back(unk_id_);
    return;
  }
  if (const auto whole = vocab_.id(word)) {
    out.push_back(*whole);
    return;
  }
  // Greedy longest match first: at each position take the longest vocabulary piece, "##"-prefixed
  // inside the word; a position where no piece matches makes the whole word [UNK].
  const size_t first = out.size();
  size_t start = 0;
  while (start < word.size()) {
    const size_t longest = start == 0 ? vocab_.max_token_bytes() : continuation_.max_key_bytes();
    size_t end = std::min(word.size(), start + longest);
    while (end > start && end < word.size() && is_continuation_byte(word[end])) --end;
    int32_t id = -1;
    while (end > start) {
      const std::string_view piece = word.substr(start, end - start);
      id = start == 0 ? vocab_.id(piece).value_or(-1) : continuation_.find(piece);
      if (id >= 0) break;
      --end;
      while (end > start && is_continuation_byte(word[end])) --end;
    }
    if (id < 0) {
      out.resize(first);
      out.push_back(unk_id_);
      return;
    }
    out.push_back(id);
    start = end;
  }
}

void WordPieceTokenizer::append_ids(std::string_view text, std::vector<int32_t>& out,
                                    int* invalid) const {
  // for_each_word uses the other scratch buffers, never this one.
  std::u32string& cps = scratch().code_points;
  cps.clear();
  *invalid += static_cast<int>(utf8::decode(text, cps));

  auto emit = [&](std::string_view word, size_t chars) { word_piece(word, chars, out); };
  // Special tokens written in the text are matched on the raw text, before normalization, as HF
  // does for its added tokens ("[SEP]" only in this exact case; none is a prefix of another).
  const char32_t* const data = cps.data();
  const size_t n = cps.size();
  size_t segment = 0;
  for (size_t i = 0; i < n; ++i) {
    if (data[i] != U'[') continue;
    for (size_t k = 0; k < 5; ++k) {
      const std::string_view name = kSpecialTokens[k];
      if (n - i < name.size()) continue;
      bool match = true;
      for (size_t j = 0; j < name.size() && match; ++j)
        match = data[i + j] == static_cast<char32_t>(name[j]);
      if (!match) continue;
      for_each_word(data + segment, data + i, emit);
      const int32_t ids[] = {pad_id_, unk_id_, cls_id_, sep_id_, mask_id_};
      out.push_back(ids[k]);
      i += name.size() - 1;
      segment = i + 1;
      break;
    }
  }
  for_each_word(data + segment, data + n, emit);
}

// ------------------------------------------------------------------------------ public API

std::vector<std::string> WordPieceTokenizer::tokenize(std::string_view text) const {
  std::vector<int32_t> ids;
  int invalid = 0;
  append_ids(text, ids, &invalid);
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (const int32_t id : ids) tokens.emplace_back(vocab_.token(id));
  return tokens;
}

std::vector<std::string> WordPieceTokenizer::pre_tokenize(std::string_view text) const {
  std::u32string cps;
  utf8::decode(text, cps);
  std::vector<std::string> words;
  for_each_word(cps.data(), cps.data() + cps.size(),
                [&](std::string_view word, size_t) { words.emplace_back(word); });
  return words;
}

Encoding WordPieceTokenizer::encode(std::string_view a, std::optional<std::string_view> b,
                                    int max_length) const {
  const int specials = b ? 3 : 2;
  if (max_length < specials) {
    throw std::invalid_argument("encode: max_length " + std::to_string(max_length) +
                                " leaves no room for the " + std::to_string(specials) +
                                " special tokens; use at least " + std::to_string(specials));
  }
  Encoding e;
  std::vector<int32_t> ia, ib;
  append_ids(a, ia, &e.invalid_utf8);
  if (b) append_ids(*b, ib, &e.invalid_utf8);

  // Truncation, as HF's truncate_encodings with strategy longest_first.
  const size_t budget = static_cast<size_t>(max_length - specials);
  if (!b) {
    if (ia.size() > budget) {
      ia.resize(budget);
      e.truncated = true;
    }
  } else if (ia.size() + ib.size() > budget) {
    size_t n1 = ia.size(), n2 = ib.size();
    const bool swapped = n1 > n2;
    if (swapped) std::swap(n1, n2);  // n1: the shorter
    n2 = n1 > budget ? n1 : std::max(n1, budget - n1);
    if (n1 + n2 > budget) {
      n1 = budget / 2;
      n2 = n1 + budget % 2;
    }
    if (swapped) std::swap(n1, n2);
    ia.resize(std::min(ia.size(), n1));
    ib.resize(std::min(ib.size(), n2));
    e.truncated = true;
  }

  const size_t t = ia.size() + ib.size() + static_cast<size_t>(specials);
  e.ids.reserve(t);
  e.ids.push_back(cls_id_);
  e.ids.insert(e.ids.end(), ia.begin(), ia.end());
  e.ids.push_back(sep_id_);
  e.type_ids.assign(e.ids.size(), 0);
  if (b) {
    e.ids.insert(e.ids.end(), ib.begin(), ib.end());
    e.ids.push_back(sep_id_);
    e.type_ids.resize(e.ids.size(), 1);
  }
  e.attention_mask.assign(e.ids.size(), 1);
  return e;
}

// ----------------------------------------------------------------------------- model folder

WordPieceTokenizer tokenizer_from_texts(std::string_view vocab_text, std::string vocab_source,
                                        std::string_view config_json, const std::string& config_source) {
  TokenizerOptions options;
  if (!config_json.empty()) {
    const std::string& name = config_source;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(config_json);
    } catch (const nlohmann::json::exception& err) {
      throw DataError(name, std::string("invalid JSON: ") + err.what());
    }
    if (!j.is_object()) throw DataError(name, "expected a JSON object");
    auto read_bool = [&](const char* key, bool& into) {
      const auto it = j.find(key);
      if (it == j.end()) return;
      if (!it->is_boolean()) {
        throw DataError(name, std::string("expected \"") + key + "\" to be true or false, found " +
                                  quote_for_message(it->dump()));
      }
      into = it->get<bool>();
    };
    read_bool("do_lower_case", options.do_lower_case);
    read_bool("tokenize_chinese_chars", options.tokenize_chinese_chars);
    if (const auto it = j.find("strip_accents"); it != j.end() && !it->is_null()) {
      bool strip = false;
      read_bool("strip_accents", strip);
      options.strip_accents = strip;
    }
  }
  return WordPieceTokenizer(Vocab::parse(vocab_text, std::move(vocab_source)), options);
}

WordPieceTokenizer load_tokenizer_from_model_dir(const std::filesystem::path& dir) {
  const std::filesystem::path config = dir / "tokenizer_config.json";
  const std::filesystem::path vocab = dir / "vocab.txt";
  std::error_code ec;
  if (!std::filesystem::exists(vocab, ec)) {
    throw DataError(vocab.string(), "not found (a BERT model folder holds vocab.txt)");
  }
  const std::string config_json = std::filesystem::exists(config, ec) ? io::read_all(config) : std::string();
  return tokenizer_from_texts(io::read_all(vocab), io::display_name(vocab), config_json, config.string());
}

}  // namespace edgetune::data
