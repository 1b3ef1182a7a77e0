"""The documentation site builds with warnings as errors, executes the tutorial notebook
(its cells assert on the fit they make), and every internal link and anchor resolves."""
from __future__ import annotations

import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from ..conftest import REPO_ROOT, child_env

DOCS = REPO_ROOT / 'docs'
#: Pages the site must have (the guides a user reads, the reference, the project pages).
PAGES = ('index', 'install', 'tutorial', 'sleap_session', 'fitting', 'round_trips',
         'body_models', 'configs', 'visual_outputs', 'training_inference', 'real_recordings',
         'registration',
         'guarantees', 'benchmarks', 'api', 'changelog')


class _Links(HTMLParser):
    """Every id and every href/src of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids, self.links = set(), []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get('id'):
            self.ids.add(attrs['id'])
        if tag == 'a' and attrs.get('name'):
            self.ids.add(attrs['name'])
        for key in ('href', 'src'):
            if attrs.get(key):
                self.links.append(attrs[key])


def _parse(path: Path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text(encoding='utf-8'))
    return parser


def broken_links(site: Path):
    """``(page, link, why)`` for every relative link of the built site that leads nowhere:
    a missing file, or an anchor the target page does not have."""
    pages = {p: _parse(p) for p in site.rglob('*.html')}
    broken = []
    for page, parsed in pages.items():
        for link in parsed.links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or link.startswith(('mailto:', 'javascript:')):
                continue                   # external: not checked (no network in CI)
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if target.is_dir():
                target = target / 'index.html'
            if not target.exists():
                broken.append((page.relative_to(site), link, 'no such file'))
            elif parts.fragment and target.suffix == '.html':
                ids = pages[target].ids if target in pages else _parse(target).ids
                if unquote(parts.fragment) not in ids:
                    broken.append((page.relative_to(site), link, 'no such anchor'))
    return broken


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    pytest.importorskip('sphinx')
    pytest.importorskip('myst_nb')
    tmp = tmp_path_factory.mktemp('docs')
    out = tmp / 'html'
    run = subprocess.run(
        [sys.executable, '-m', 'sphinx', '-W', '--keep-going', '-b', 'html', '-q',
         str(DOCS), str(out)], capture_output=True, text=True, timeout=1200,
        env=child_env(OMP_NUM_THREADS='1', SMILFIT_TUTORIAL_DIR=str(tmp / 'tutorial'),
                 SMILFIT_DOCS_EXECUTE='force'))
    assert run.returncode == 0, (run.stdout[-3000:], run.stderr[-5000:])
    return out, tmp / 'tutorial'


def test_the_site_builds_with_every_page(site):
    out, _ = site
    missing = [p for p in PAGES if not (out / f'{p}.html').is_file()]
    assert not missing
    api = (out / 'api.html').read_text()
    for name in ('smilfit.body_models.SMILModel', 'smilfit.apis.fitting.fit_dataset',
                 'smilfit.handlers.Keypoint2DHandler'):
        assert f'id="{name}' in api, name


def test_every_internal_link_and_anchor_resolves(site):
    out, _ = site
    assert broken_links(out) == []


def test_the_link_check_finds_a_broken_link(tmp_path):
    (tmp_path / 'a.html').write_text('<h1 id="top">A</h1><a href="b.html#nowhere">b</a>'
                                     '<a href="c.html">c</a><a href="#top">up</a>'
                                     '<a href="https://example.org/x">out</a>')
    (tmp_path / 'b.html').write_text('<h1 id="here">B</h1>')
    assert sorted((str(p), link, why) for p, link, why in broken_links(tmp_path)) == [
        ('a.html', 'b.html#nowhere', 'no such anchor'), ('a.html', 'c.html', 'no such file')]


def test_the_tutorial_is_executed_and_rendered_with_its_outputs(site):
    """The notebook is committed without outputs; the build runs it (its cells assert on
    the fit) and the page shows its figures."""
    import nbformat
    out, work = site
    nb = nbformat.read(DOCS / 'tutorial.ipynb', as_version=4)
    assert not any(c.get('outputs') for c in nb.cells if c.cell_type == 'code'), \
        'commit the notebook without outputs'
    assert (work / 'fit' / 'fit_results.h5').is_file()
    assert (work / 'frame0.glb').is_file()
    page = (out / 'tutorial.html').read_text()
    assert page.count('<img') >= 2        # the overlay of the views and the error plots
