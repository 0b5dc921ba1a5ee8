"""The README stays a front page that tells the truth about the tree: its "Where things live" table
names every root script and every package, each name it gives exists, and every page it links is there."""
import os
import re

from tests.helpers import ROOT

README = os.path.join(ROOT, 'README.md')
MAX_README_LINES = 300


def section(text, title):
    """The lines of README section `## title` up to the next `## `."""
    start = text.index(f'## {title}\n')
    end = text.find('\n## ', start + 1)
    return text[start:end if end != -1 else len(text)]


def test_the_where_things_live_table_matches_the_tree():
    table = section(open(README).read(), 'Where things live')
    named = set(re.findall(r'`([\w./-]+)`', table))
    root_scripts = {f for f in os.listdir(ROOT) if f.endswith('.py')}
    packages = {f'{d}/' for d in os.listdir(ROOT) if os.path.isfile(os.path.join(ROOT, d, '__init__.py'))}
    assert root_scripts - named == set(), 'root files missing from the README table'
    assert packages - named == set(), 'packages missing from the README table'
    for name in (n for n in named if n.endswith(('/', '.py'))):
        assert os.path.exists(os.path.join(ROOT, name)), f'the README table names {name}, which does not exist'


def test_the_readme_is_short_and_its_pages_exist():
    text = open(README).read()
    assert len(text.splitlines()) <= MAX_README_LINES
    links = re.findall(r'\]\(([^)#]+)\)', text)
    assert links and all(os.path.isfile(os.path.join(ROOT, link)) for link in links), links
    for page in os.listdir(os.path.join(ROOT, 'docs')):
        for link in re.findall(r'\]\(([^)#:]+)\)', open(os.path.join(ROOT, 'docs', page)).read()):
            assert os.path.exists(os.path.join(ROOT, 'docs', link)), f'docs/{page} links {link}, which does not exist'
