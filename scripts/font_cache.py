"""Build matplotlib's font cache for the sandbox, once, at install:

    python3 -I scripts/font_cache.py SITE_PACKAGES

Writes SITE_PACKAGES/matplotlib-cache/fontlist-v*.json, which harness/run.py links into each run's
matplotlib configuration directory, so no run scans fonts (0.1-0.3 s, and a warning each time).
Only the fonts matplotlib ships are kept: it records them relative to its own data directory,
so the cache holds wherever the packages are mounted; the host's fonts are not in the jail.
"""

import json
import os
import sys
import tempfile


def main(site_packages):
    target = os.path.join(site_packages, "matplotlib-cache")
    with tempfile.TemporaryDirectory() as config:
        os.environ["MPLCONFIGDIR"] = config
        sys.path.append(site_packages)
        import matplotlib.font_manager  # builds the cache in config

        (name,) = [n for n in os.listdir(config) if n.startswith("fontlist-")]
        with open(os.path.join(config, name)) as cache:
            fonts = json.load(cache)
    for key in ("ttflist", "afmlist"):
        fonts[key] = [font for font in fonts[key] if not os.path.isabs(font["fname"])]
    if not fonts["ttflist"]:
        sys.exit("matplotlib's own fonts are missing from its font cache")
    os.makedirs(target, exist_ok=True)
    for old in os.listdir(target):
        os.unlink(os.path.join(target, old))
    with open(os.path.join(target, name), "w") as cache:
        json.dump(fonts, cache)
    print(f"{target}/{name}: {len(fonts['ttflist'])} fonts, matplotlib {matplotlib.__version__}")


if __name__ == "__main__":
    main(sys.argv[1])
