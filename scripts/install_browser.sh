#!/usr/bin/env bash
# Debian's chromium, for tests/test_demo.py: the demo page in a real headless browser. playwright drives this
# binary (the chromium on PATH, or $FER_FUNC_CHROMIUM) and downloads no browser of its own.
# Guarded, never fails: where chromium is already there, or apt-get or root is missing, or the install fails, it
# says so and exits 0, and the browser test skips with the reason. About a minute on a 2-core machine (~120-160 MB
# of packages).
set -u
if command -v chromium >/dev/null 2>&1; then
    echo "install_browser: chromium already installed ($(command -v chromium))"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" != 0 ]; then
    echo "install_browser: not root on a Debian/Ubuntu machine; install Chromium yourself (or set FER_FUNC_CHROMIUM)," \
         "tests/test_demo.py's browser test skips meanwhile"
    exit 0
fi
start=$SECONDS
if apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; then
    echo "install_browser: chromium installed in $((SECONDS - start)) s"
else
    echo "install_browser: apt-get install chromium failed after $((SECONDS - start)) s; the browser test will skip"
fi
exit 0
