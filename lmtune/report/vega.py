"""vega, vega-lite and vega-embed inlined from the vl-convert-python wheel, for pages that render offline:
compare's report (lmtune/report/page.py) and the page `dvc plots show` / `dvc plots diff` write.

DVC's default page loads the three libraries from a CDN, so without network it is blank. `TEMPLATE`
carries them inline (`vl_convert.javascript_bundle()` sets window.vegaEmbed, window.vega and
window.vegaLite, all that DVC's plot divs call), and has no `{scripts}` placeholder, so DVC adds none of
its CDN <script> tags. `.dvc/config` points `plots.html_template` at it; `make install` writes it with
`python -m lmtune.cli.plots_template`. It is generated rather than committed: 0.9 MB of minified
JavaScript that follows the pinned vl-convert-python version.
"""

# vega, vega-lite and vega-embed are BSD-3-Clause; pages that carry them carry this notice.
VEGA_NOTICE = """vega {vega}, vega-lite {vegalite}, vega-embed {embed}, bundled by vl-convert-python.
Copyright (c) 2015-2025, University of Washington Interactive Data Lab. All rights reserved.
Redistribution and use in source and binary forms, with or without modification, are permitted provided
that the following conditions are met: 1. Redistributions of source code must retain the above copyright
notice, this list of conditions and the following disclaimer. 2. Redistributions in binary form must
reproduce the above copyright notice, this list of conditions and the following disclaimer in the
documentation and/or other materials provided with the distribution. 3. Neither the name of the copyright
holder nor the names of its contributors may be used to endorse or promote products derived from this
software without specific prior written permission.
THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS" AND ANY EXPRESS OR IMPLIED
WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A
PARTICULAR PURPOSE ARE DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT HOLDER OR CONTRIBUTORS BE LIABLE FOR ANY
DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR CONSEQUENTIAL DAMAGES (INCLUDING, BUT NOT LIMITED TO,
PROCUREMENT OF SUBSTITUTE GOODS OR SERVICES; LOSS OF USE, DATA, OR PROFITS; OR BUSINESS INTERRUPTION)
HOWEVER CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER IN CONTRACT, STRICT LIABILITY, OR TORT (INCLUDING
NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE USE OF THIS SOFTWARE, EVEN IF ADVISED OF THE
POSSIBILITY OF SUCH DAMAGE."""

# DVC fills {plot_divs} (one <div> + inline vegaEmbed() call per plot) and {refresh_tag}.
TEMPLATE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
{{refresh_tag}}
<title>DVC Plot</title>
<!--
{notice}
-->
<script>
{bundle}
</script>
<style>
table {{ border-spacing: 15px; }}
</style>
</head>
<body>
{{plot_divs}}
</body>
</html>
"""


def bundle() -> str:
    """vega, vega-lite and vega-embed as one script that sets window.vegaEmbed, .vega and .vegaLite.

    The newest vega-lite (6.x), matching the bundled vega 6 runtime; it compiles DVC's vega-lite v5
    templates (vega-embed notes the $schema version in the console, a warning).
    """
    import vl_convert as vlc

    return script_safe(vlc.javascript_bundle())


def vega_notice() -> str:
    import vl_convert as vlc

    return VEGA_NOTICE.format(vega=vlc.get_vega_version(), vegalite=vlc.get_vegalite_versions()[-1],
                              embed=vlc.get_vega_embed_version())


def script_safe(js: str) -> str:
    """JavaScript for an inline <script>: a literal "</script" inside would end the element early."""
    return js.replace("</script", "<\\/script")


def render() -> str:
    return TEMPLATE.format(notice=vega_notice(), bundle=bundle())
