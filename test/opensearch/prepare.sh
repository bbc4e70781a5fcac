#!/usr/bin/env bash
# Resolves a real OpenSearch node (server, netty4 HTTP transport, mapper-extras,
# log4j-core) with Maven and compiles the launcher class against it, into
# .cache/opensearch/<version>/ (lib/ jars, classes/ launcher). Cached: a second
# run with the same pom.xml and launcher does nothing. Prints the classpath.
# Exits 3 with a one-line reason when Java or Maven is missing or the jars
# cannot be resolved (no network): callers skip or fail on that line.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
version=$(sed -n 's:.*<opensearch.version>\(.*\)</opensearch.version>.*:\1:p' "$here/pom.xml")
cache="$repo/.cache/opensearch/$version"
stamp=$(cat "$here/pom.xml" "$here/CpostOpenSearchNode.java" | sha256sum | cut -c1-16)
classpath="$cache/classes:$cache/lib/*"
if [ "$(cat "$cache/ready" 2>/dev/null)" = "$stamp" ]; then echo "$classpath"; exit 0; fi

command -v java >/dev/null && command -v javac >/dev/null || { echo "no Java (javac) here: run test/setup.sh (installs a JDK)" >&2; exit 3; }
command -v mvn >/dev/null || { echo "no Maven (mvn) here: run test/setup.sh (installs maven)" >&2; exit 3; }
mkdir -p "$cache"
tmp=$(mktemp -d "$cache/.prepare-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
log="$tmp/mvn.log"
# Short network timeouts and a hard ceiling: an unreachable repository is a clear failure, not a hang.
if ! timeout 300 mvn -B -q -Dstyle.color=never -f "$here/pom.xml" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp/lib" \
    -Daether.connector.connectTimeout=15000 -Daether.connector.requestTimeout=60000 >"$log" 2>&1; then
  reason=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -m1 '^\[ERROR\]' | sed -e 's/^\[ERROR\] *//' -e 's/ available from.*//' | cut -c1-200 || true)
  echo "could not resolve OpenSearch $version with Maven, which must reach its repositories once (then .cache/opensearch is used): ${reason:-mvn failed}" >&2
  exit 3
fi
javac -nowarn -d "$tmp/classes" -cp "$tmp/lib/*" "$here/CpostOpenSearchNode.java" >&2
rm -rf "$cache/lib" "$cache/classes"
mv "$tmp/lib" "$tmp/classes" "$cache/"
echo "$stamp" > "$cache/ready"
echo "$classpath"
