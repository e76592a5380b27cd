"""Screenshot of an l4p viewer.html in headless Chromium, with the browser test's helpers
(tests/viz/test_viewer_browser.py: Debian's chromium + chromium-driver, WebGL through SwiftShader).

    .venv/bin/python scripts/viewer_screenshot.py OUT/NAME/viewer.html docs/viewer.png --frame 20

Shows kept frame --frame (default: the middle one) in the page's default view; --accumulate and
--motion switch those toggles on. Fails if the page logs an error or the 3D view stays blank.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

HELPERS = Path(__file__).resolve().parents[1] / "tests" / "viz" / "test_viewer_browser.py"


def _helpers():
    spec = importlib.util.spec_from_file_location("viewer_browser", HELPERS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("html", type=Path, help="a viewer.html of l4p view / l4p run --viewer")
    p.add_argument("png", type=Path, help="the screenshot to write")
    p.add_argument("--frame", type=int, default=None, help="kept frame to show (default: the middle one)")
    p.add_argument("--size", default="1400x760", help="viewport WxH in CSS pixels (default 1400x760)")
    p.add_argument("--accumulate", action="store_true", help="switch 'accumulate points' on")
    p.add_argument("--motion", action="store_true", help="switch 'motion colouring' on")
    args = p.parse_args(argv)
    vb = _helpers()
    why = vb.browser_missing()
    if why:
        print(f"viewer_screenshot: {why}", file=sys.stderr)
        return 2
    width, height = (int(v) for v in args.size.lower().split("x"))
    driver = vb.start_browser(width, height)
    try:
        # the exact viewport (a headless window's size includes room for its toolbars)
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        vb.load_viewer(driver, args.html)
        frames = driver.execute_script("return window.l4pViewer.header.frames.length")
        frame = frames // 2 if args.frame is None else args.frame
        script = f"v.setFrame({frame});"
        for name, on in (("accumulate", args.accumulate), ("motion", args.motion)):
            if on:
                script += f"v.set({name!r}, true);"
        vb.settled(driver, script)
        fraction = vb.drawn_fraction(vb.canvas_pixels(driver))
        errors = vb.page_errors(driver)
        if errors or fraction < 0.02:
            print(f"viewer_screenshot: page errors {errors}, drawn fraction {fraction:.3f}", file=sys.stderr)
            return 1
        args.png.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(args.png))
        print(f"{args.png}: frame {frame} of {frames}, {fraction:.0%} of the 3D view drawn")
    finally:
        driver.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
