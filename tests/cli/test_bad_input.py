"""Bad input to every command, as a table: each case must exit 2 with exactly one line on stderr
that names what is wrong, and leave every file in the workspace as it was (nothing written,
nothing changed). Cases go through `culturepark.cli.main` in-process, as the shell would."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import yaml

from culturepark import cli
from culturepark.engine.log import RunLog
from culturepark.engine.records import RunHeader, TurnRecord
from tests.conftest import scenario_dict, write_tiny_data

DEAD = "http://127.0.0.1:9/v1"  # nothing listens: a case that reached the network would say so


def _yaml(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def _log(path: Path, *records: object, raw: bytes = b"") -> Path:
    path.mkdir(parents=True)
    log = RunLog(path / "log.jsonl").open()
    for rec in records:
        log.append(rec)  # type: ignore[arg-type]
    log.close()
    with open(path / "log.jsonl", "ab") as fh:
        fh.write(raw)
    return path


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    """A workspace with good and bad inputs of every kind."""
    write_tiny_data(tmp_path / "data")
    good = scenario_dict()
    good["backend"]["base_url"] = DEAD
    _yaml(tmp_path / "good.yaml", good)
    (tmp_path / "bad_yaml.yaml").write_text("name: [unclosed\nseed: 1\n")
    _yaml(tmp_path / "unknown_field.yaml", {**good, "colour": "red"})
    _yaml(tmp_path / "wrong_type.yaml", {**good, "seed": "many"})
    _yaml(tmp_path / "martian.yaml", {**good, "cultures": ["Martian"]})
    _yaml(tmp_path / "item999.yaml", {**good, "items": ["999"]})
    (tmp_path / "afile").write_text("not a directory")
    (tmp_path / "empty").mkdir()
    header = RunHeader(run_name="r", scenario=good, scenario_hash="h")
    turn = TurnRecord("a", 0, 0, "Wei", "delegate", "hello")
    _log(tmp_path / "corrupt", header, turn, raw=b"garbage\n" + orjson.dumps(turn) + b"\n")
    (tmp_path / "noheader").mkdir()
    (tmp_path / "noheader" / "log.jsonl").write_bytes(orjson.dumps(turn) + b"\n")
    _log(tmp_path / "badrecord", header, raw=b'{"type":"turn","conversation_id":"a","index":"one"}\n')
    _log(tmp_path / "crun", header, turn)
    (tmp_path / "sft_corrupt.jsonl").write_text('{"messages": [{"role": "user", "content": "q"}]\n')
    (tmp_path / "sft_user_last.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "q"}]}) + "\n")
    (tmp_path / "sft_empty.jsonl").write_text("")
    (tmp_path / "mod.jsonl").write_text("".join(json.dumps({"t": f"text {i}", "label": str(i % 2)}) + "\n"
                                                for i in range(6)))
    (tmp_path / "mod_corrupt.jsonl").write_text(json.dumps({"t": "a", "label": "1"}) + "\n{not json\n")
    spec = {"name": "s", "path": str(tmp_path / "mod.jsonl"), "text_field": "t", "positive_labels": ["1"],
            "negative_labels": ["0"], "language": "English", "task": "spam"}
    _yaml(tmp_path / "spec_text_field.yaml", {**spec, "text_field": "text"})
    _yaml(tmp_path / "spec_corrupt_data.yaml", {**spec, "path": str(tmp_path / "mod_corrupt.jsonl")})
    _yaml(tmp_path / "spec_labels.yaml", {**spec, "positive_labels": ["offensive"], "negative_labels": ["fine"]})
    _yaml(tmp_path / "spec_unknown.yaml", {**spec, "colour": "red"})
    _yaml(tmp_path / "spec_paper_half.yaml", {**spec, "paper_prompt": "if spam, just say \"1\":"})
    _yaml(tmp_path / "refine_unknown.yaml", {"colour": "red"})
    _yaml(tmp_path / "refine_type.yaml", {"concurrency": "lots"})
    (tmp_path / "texts.jsonl").write_text(json.dumps({"text": "Family comes first."}) + "\n")
    (tmp_path / "texts_corrupt.jsonl").write_text(json.dumps({"text": "ok"}) + "\n{oops\n")
    _yaml(tmp_path / "script_bad.yaml", [{"pattern": "x"}])
    (tmp_path / "release_no_items.csv").write_text("B_COUNTRY,B_COUNTRY_ALPHA,Q1\n156,CHN,1\n")
    (tmp_path / "release.csv").write_text("B_COUNTRY,B_COUNTRY_ALPHA,Q27,Q31\n156,CHN,1,2\n276,DEU,2,-1\n"
                                          "410,KOR,3,4\n")
    for name, text in (("ref_corrupt", '{"opinion_id": "a", "kept": true}\n{oops\n'),
                       ("ref_none", json.dumps({"opinion_id": "a", "culture": "X", "text": "t", "kept": False}))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "opinions.jsonl").write_text(text)
    return tmp_path


Args = Callable[[Path], list[str]]
M = ["--model", "openai:sim-model", "--base-url", DEAD]

CASES: dict[str, list[tuple[str, Args, str]]] = {  # command -> (case, argv, what the line says)
    "run": [
        ("no such file", lambda w: ["run", str(w / "nope.yaml"), "--out", str(w / "o")], "no such file"),
        ("invalid YAML", lambda w: ["run", str(w / "bad_yaml.yaml"), "--out", str(w / "o")], "invalid YAML"),
        ("unknown field", lambda w: ["run", str(w / "unknown_field.yaml"), "--out", str(w / "o")], "colour: unknown field"),
        ("wrong type", lambda w: ["run", str(w / "wrong_type.yaml"), "--out", str(w / "o")], "seed"),
        ("unknown culture", lambda w: ["run", str(w / "martian.yaml"), "--out", str(w / "o"), "--data-dir",
                                       str(w / "data")], "unknown culture 'Martian'"),
        ("negative limit", lambda w: ["run", "quickstart", "--limit", "-5", "--out", str(w / "o")], "--limit"),
        ("--arm on conversations", lambda w: ["run", str(w / "good.yaml"), "--arm", "a=openai:m", "--out",
                                              str(w / "o"), "--data-dir", str(w / "data")], "--arm applies"),
        ("unreachable server", lambda w: ["run", str(w / "good.yaml"), "--out", str(w / "o"), "--data-dir",
                                          str(w / "data")], "cannot reach"),
        ("out is a file", lambda w: ["run", str(w / "good.yaml"), "--out", str(w / "afile"), "--data-dir",
                                     str(w / "data")], "not a directory"),
    ],
    "validate": [
        ("no such file", lambda w: ["validate", str(w / "nope.yaml")], "no such file"),
        ("invalid YAML", lambda w: ["validate", str(w / "bad_yaml.yaml")], "invalid YAML"),
        ("wrong type", lambda w: ["validate", str(w / "wrong_type.yaml")], "seed"),
        ("item not in the data", lambda w: ["validate", str(w / "item999.yaml"), "--data-dir", str(w / "data")],
         "999"),
        ("no file named", lambda w: ["validate"], "required"),
    ],
    "replay": [
        ("not a run directory", lambda w: ["replay", str(w / "empty")], "no log"),
        ("corrupt line", lambda w: ["replay", str(w / "corrupt")], "log.jsonl:3: corrupt record"),
        ("no header", lambda w: ["replay", str(w / "noheader")], "not a run header"),
        ("not a record", lambda w: ["replay", str(w / "badrecord")], "log.jsonl:2: not a valid 'turn' record"),
        ("negative limit", lambda w: ["replay", str(w / "crun"), "--limit", "-1"], "--limit"),
    ],
    "export": [
        ("not a run directory", lambda w: ["export", str(w / "empty")], "no log"),
        ("missing directory", lambda w: ["export", str(w / "nope")], "no log"),
        ("corrupt line", lambda w: ["export", str(w / "corrupt")], "corrupt record"),
        ("no header", lambda w: ["export", str(w / "noheader")], "not a run header"),
        ("not a record", lambda w: ["export", str(w / "badrecord")], "not a valid 'turn' record"),
    ],
    "refine": [
        ("not a run directory", lambda w: ["refine", str(w / "empty")], "not a run directory"),
        ("corrupt log", lambda w: ["refine", str(w / "corrupt"), "--out", str(w / "o")], "corrupt record"),
        ("unknown config field", lambda w: ["refine", str(w / "crun"), "--scenario", str(w / "refine_unknown.yaml"),
                                            "--out", str(w / "o")], "colour: unknown field"),
        ("config wrong type", lambda w: ["refine", str(w / "crun"), "--scenario", str(w / "refine_type.yaml"),
                                         "--out", str(w / "o")], "concurrency"),
        ("config missing", lambda w: ["refine", str(w / "crun"), "--scenario", str(w / "nope.yaml"),
                                      "--out", str(w / "o")], "no such file"),
        ("unknown embeddings", lambda w: ["refine", str(w / "crun"), "--embeddings", "magic"], "invalid choice"),
    ],
    "dataset build": [
        ("missing directory", lambda w: ["dataset", "build", str(w / "nope"), "--out", str(w / "o")],
         "no such directory"),
        ("not a run directory", lambda w: ["dataset", "build", str(w / "empty"), "--out", str(w / "o")],
         "no log.jsonl"),
        ("no finished conversation", lambda w: ["dataset", "build", str(w / "crun"), "--out", str(w / "o")],
         "every conversation was dropped"),
        ("no share left for train", lambda w: ["dataset", "build", str(w / "crun"), "--out", str(w / "o"),
                                               "--validation", "0.5", "--test", "0.5"], "leave a share for train"),
        ("not an item id", lambda w: ["dataset", "build", str(w / "crun"), "--out", str(w / "o"),
                                      "--holdout-items", "Q2x"], "neither a count nor an item id"),
        ("no --out", lambda w: ["dataset", "build", str(w / "crun")], "required"),
    ],
    "eval hofstede": [
        ("unknown culture", lambda w: ["eval", "hofstede", *M, "--culture", "Martian", "--out", str(w / "o")],
         "unknown culture 'Martian'"),
        ("bad model spec", lambda w: ["eval", "hofstede", "--model", "gpt4", "--culture", "Chinese", "--out",
                                      str(w / "o")], "model spec 'gpt4'"),
        ("missing adapter", lambda w: ["eval", "hofstede", "--model", f"local:gemma3-270m+lora:{w / 'nope'}",
                                       "--culture", "Chinese", "--out", str(w / "o")], "does not exist"),
        ("zero seeds", lambda w: ["eval", "hofstede", *M, "--culture", "Chinese", "--seeds", "0"], "--seeds"),
        ("no VSM13 items in the data", lambda w: ["eval", "hofstede", *M, "--culture", "Chinese", "--data-dir",
                                                  str(w / "data"), "--out", str(w / "o")], "vsm13_items.jsonl"),
    ],
    "eval wvs": [
        ("unknown culture", lambda w: ["eval", "wvs", *M, "--culture", "Martian", "--data-dir", str(w / "data"),
                                       "--out", str(w / "o")], "unknown culture 'Martian'"),
        ("culture without a WVS file", lambda w: ["eval", "wvs", *M, "--culture", "Korean", "--data-dir",
                                                  str(w / "data"), "--out", str(w / "o")], "no WVS file"),
        ("unknown item", lambda w: ["eval", "wvs", *M, "--culture", "Chinese", "--items", "999", "--data-dir",
                                    str(w / "data"), "--out", str(w / "o")], "item '999'"),
        ("unknown prompt style", lambda w: ["eval", "wvs", *M, "--culture", "Chinese", "--prompt-style", "fancy"],
         "invalid choice"),
        ("zero seeds", lambda w: ["eval", "wvs", *M, "--culture", "Chinese", "--seeds", "0"], "--seeds"),
        ("unreachable server", lambda w: ["eval", "wvs", *M, "--culture", "Chinese", "--data-dir", str(w / "data"),
                                          "--out", str(w / "o")], "cannot reach"),
    ],
    "paper": [
        ("unknown culture", lambda w: ["paper", "--culture", "Martian", "--out", str(w / "o"), "--base-url", DEAD,
                                       "--data-dir", str(w / "data")], "unknown culture 'Martian'"),
        ("unreachable server", lambda w: ["paper", "--culture", "Chinese", "--out", str(w / "o"), "--base-url", DEAD,
                                          "--data-dir", str(w / "data")], "cannot reach"),
        ("zero seeds", lambda w: ["paper", "--culture", "Chinese", "--out", str(w / "o"), "--seeds", "0"], "--seeds"),
        ("unknown trainer", lambda w: ["paper", "--culture", "Chinese", "--out", str(w / "o"), "--trainer", "magic"],
         "invalid choice"),
        ("negative limit", lambda w: ["paper", "--culture", "Chinese", "--out", str(w / "o"), "--limit", "-2"],
         "--limit"),
        ("no --out", lambda w: ["paper", "--culture", "Chinese"], "required"),
        ("a baseline that is no model spec", lambda w: ["paper", "--culture", "Chinese", "--out", str(w / "o"),
                                                        "--base-url", DEAD, "--baseline", "openai:gpt-4", "nope:x",
                                                        "--data-dir", str(w / "data")], "model spec 'nope:x'"),
        ("--baseline without a spec", lambda w: ["paper", "--culture", "Chinese", "--out", str(w / "o"),
                                                 "--baseline"], "--baseline"),
        ("a model no longer fine-tuned", lambda w: ["paper", "--culture", "Chinese", "--out", str(w / "o"),
                                                    "--base-url", DEAD, "--tune-model", "gpt-3.5-turbo-0613",
                                                    "--data-dir", str(w / "data")],
         "no longer fine-tunes"),
        ("a model no longer fine-tuned, dry run", lambda w: ["paper", "--culture", "Chinese", "--out", str(w / "o"),
                                                             "--tune-model", "gpt-3.5-turbo-0613", "--dry-run"],
         "gpt-4o-mini-2024-07-18"),
    ],
    "eval moderation": [
        ("unknown dataset", lambda w: ["eval", "moderation", *M, "--dataset", "klingon", "--out", str(w / "o")],
         "not a spec file"),
        ("text field not in the data", lambda w: ["eval", "moderation", *M, "--dataset",
                                                  str(w / "spec_text_field.yaml"), "--out", str(w / "o")],
         "no field 'text'"),
        ("corrupt data line", lambda w: ["eval", "moderation", *M, "--dataset", str(w / "spec_corrupt_data.yaml"),
                                         "--out", str(w / "o")], "mod_corrupt.jsonl:2"),
        ("no label of the spec", lambda w: ["eval", "moderation", *M, "--dataset", str(w / "spec_labels.yaml"),
                                            "--out", str(w / "o")], "no row"),
        ("unknown spec field", lambda w: ["eval", "moderation", *M, "--dataset", str(w / "spec_unknown.yaml"),
                                          "--out", str(w / "o")], "colour: unknown field"),
        ("negative limit", lambda w: ["eval", "moderation", *M, "--dataset", "english_offensive", "--limit", "-1"],
         "--limit"),
        ("paper parse, spec without the paper's question", lambda w: ["eval", "moderation", *M, "--dataset",
                                                                      str(w / "spec_labels.yaml"), "--parse", "paper",
                                                                      "--out", str(w / "o")],
         "--parse paper needs paper_prompt"),
        ("paper prompt without label words", lambda w: ["eval", "moderation", *M, "--dataset",
                                                        str(w / "spec_paper_half.yaml"), "--out", str(w / "o")],
         "paper_prompt and paper_labels come together"),
        ("unknown parse", lambda w: ["eval", "moderation", *M, "--dataset", "english_offensive", "--parse", "loose"],
         "invalid choice"),
    ],
    "eval compare": [
        ("bad task", lambda w: ["eval", "compare", "--models", "openai:m", "--tasks", "trivia:x", "--base-url", DEAD,
                                "--out", str(w / "o")], "task 'trivia:x'"),
        ("bad model spec", lambda w: ["eval", "compare", "--models", "gpt4", "--tasks", "hofstede:Chinese",
                                      "--out", str(w / "o")], "model spec 'gpt4'"),
        ("unknown culture", lambda w: ["eval", "compare", "--models", "openai:m", "--base-url", DEAD, "--tasks",
                                       "hofstede:Martian", "--out", str(w / "o")], "unknown culture 'Martian'"),
        ("zero seeds", lambda w: ["eval", "compare", "--models", "openai:m", "--tasks", "hofstede:Chinese",
                                  "--seeds", "0"], "--seeds"),
        ("no models", lambda w: ["eval", "compare", "--tasks", "hofstede:Chinese"], "required"),
    ],
    "eval diversity": [
        ("missing file", lambda w: ["eval", "diversity", str(w / "nope.jsonl"), "--reference", str(w / "texts.jsonl")],
         "nope.jsonl"),
        ("corrupt line", lambda w: ["eval", "diversity", str(w / "texts_corrupt.jsonl"), "--reference",
                                    str(w / "texts.jsonl")], "texts_corrupt.jsonl:2"),
        ("corrupt reference", lambda w: ["eval", "diversity", str(w / "texts.jsonl"), "--reference",
                                         str(w / "texts_corrupt.jsonl")], "texts_corrupt.jsonl:2"),
        ("field not in the data", lambda w: ["eval", "diversity", str(w / "texts.jsonl"), "--reference",
                                             str(w / "texts.jsonl"), "--field", "opinion"], "opinion"),
        ("no reference", lambda w: ["eval", "diversity", str(w / "texts.jsonl")], "required"),
        ("a directory that is not a run", lambda w: ["eval", "diversity", str(w / "empty"), "--reference",
                                                     str(w / "texts.jsonl")], "not a run directory"),
    ],
    "eval education": [
        ("not a run directory", lambda w: ["eval", "education", str(w / "empty")], "no log.jsonl"),
        ("a conversation run", lambda w: ["eval", "education", str(w / "crun")], "not an education study"),
        ("corrupt header", lambda w: ["eval", "education", str(w / "noheader")], "not a run header"),
        ("zero resamples", lambda w: ["eval", "education", str(w / "crun"), "--bootstrap", "0"], "--bootstrap"),
        ("missing directory", lambda w: ["eval", "education", str(w / "nope")], "no log.jsonl"),
    ],
    "study serve": [
        ("not an education study", lambda w: ["study", "serve", str(w / "good.yaml"), "--out", str(w / "o"),
                                              "--data-dir", str(w / "data"), "--port", "0"], "education scenario"),
        ("no such file", lambda w: ["study", "serve", str(w / "nope.yaml"), "--out", str(w / "o")], "no such file"),
        ("invalid YAML", lambda w: ["study", "serve", str(w / "bad_yaml.yaml"), "--out", str(w / "o")],
         "invalid YAML"),
        ("negative port", lambda w: ["study", "serve", "education-quickstart", "--out", str(w / "o"), "--port", "-1"],
         "--port"),
        ("no --out", lambda w: ["study", "serve", "education-quickstart"], "required"),
    ],
    "report": [
        ("missing directory", lambda w: ["report", str(w / "nope"), "--out", str(w / "rep")], "not a directory"),
        ("a file", lambda w: ["report", str(w / "afile"), "--out", str(w / "rep")], "not a directory"),
        ("corrupt run header", lambda w: ["report", str(w / "noheader"), "--out", str(w / "rep")], "log.jsonl"),
        ("out is a file", lambda w: ["report", str(w / "crun"), "--out", str(w / "afile")], "afile"),
        ("nothing named", lambda w: ["report"], "required"),
    ],
    "train lora": [
        ("missing SFT file", lambda w: ["train", "lora", str(w / "nope.jsonl"), "--out", str(w / "o")], "not found"),
        ("corrupt line", lambda w: ["train", "lora", str(w / "sft_corrupt.jsonl"), "--out", str(w / "o")],
         "sft_corrupt.jsonl:1"),
        ("user message last", lambda w: ["train", "lora", str(w / "sft_user_last.jsonl"), "--out", str(w / "o")],
         "assistant"),
        ("no examples", lambda w: ["train", "lora", str(w / "sft_empty.jsonl"), "--out", str(w / "o")], "no examples"),
        ("zero rank", lambda w: ["train", "lora", str(w / "sft_user_last.jsonl"), "--out", str(w / "o"), "--r", "0"],
         "--r"),
        ("zero learning rate", lambda w: ["train", "lora", str(w / "sft_empty.jsonl"), "--out", str(w / "o"),
                                          "--lr", "0"], "--lr"),
        ("unknown preset", lambda w: ["train", "lora", str(w / "sft_empty.jsonl"), "--out", str(w / "o"),
                                      "--preset", "fastest"], "invalid choice"),
    ],
    "train openai": [
        ("missing SFT file", lambda w: ["train", "openai", str(w / "nope.jsonl"), "--model", "m", "--out",
                                        str(w / "o")], "nope.jsonl"),
        ("corrupt line", lambda w: ["train", "openai", str(w / "sft_corrupt.jsonl"), "--model", "m", "--out",
                                    str(w / "o")], "format check"),
        ("zero epochs", lambda w: ["train", "openai", str(w / "sft_empty.jsonl"), "--model", "m", "--epochs", "0"],
         "--epochs"),
        ("no model", lambda w: ["train", "openai", str(w / "sft_empty.jsonl")], "required"),
        ("key variable unset", lambda w: ["train", "openai", str(w / "texts_as_sft.jsonl"), "--model", "m",
                                          "--api-key-env", "CP_TEST_KEY_UNSET", "--base-url",
                                          "https://api.example.invalid/v1", "--out", str(w / "o")],
         "CP_TEST_KEY_UNSET"),
    ],
    "eval phenomena": [
        ("not a run directory", lambda w: ["eval", "phenomena", str(w / "empty"), *M, "--out", str(w / "o")],
         "not a run directory"),
        ("corrupt header", lambda w: ["eval", "phenomena", str(w / "noheader"), *M, "--out", str(w / "o")],
         "not a run header"),
        ("bad judge spec", lambda w: ["eval", "phenomena", str(w / "crun"), "--model", "gpt4", "--out",
                                      str(w / "o")], "model spec 'gpt4'"),
        ("nothing finished yet", lambda w: ["eval", "phenomena", str(w / "crun"), *M, "--out", str(w / "o")],
         "no finished conversation"),
        ("no judge", lambda w: ["eval", "phenomena", str(w / "crun")], "required"),
    ],
    "eval content": [
        ("not a refine directory", lambda w: ["eval", "content", str(w / "empty"), *M, "--out", str(w / "o")],
         "no opinions.jsonl"),
        ("corrupt opinions", lambda w: ["eval", "content", str(w / "ref_corrupt"), *M, "--out", str(w / "o")],
         "opinions.jsonl:2"),
        ("no kept opinion", lambda w: ["eval", "content", str(w / "ref_none"), *M, "--out", str(w / "o")],
         "no kept opinion"),
        ("bad judge spec", lambda w: ["eval", "content", str(w / "ref_none"), "--model", "gpt4"], "model spec"),
        ("no judge", lambda w: ["eval", "content", str(w / "ref_none")], "required"),
    ],
    "eval fidelity": [
        ("not a run directory", lambda w: ["eval", "fidelity", str(w / "empty"), "--out", str(w / "o")],
         "not a run directory"),
        ("corrupt header", lambda w: ["eval", "fidelity", str(w / "noheader"), "--out", str(w / "o")],
         "not a run header"),
        ("bad model spec", lambda w: ["eval", "fidelity", str(w / "crun"), "--model", "gpt4", "--out",
                                      str(w / "o")], "model spec 'gpt4'"),
        ("nothing finished yet", lambda w: ["eval", "fidelity", str(w / "crun"), "--out", str(w / "o")],
         "no finished conversation"),
        ("missing directory", lambda w: ["eval", "fidelity", str(w / "nope"), "--out", str(w / "o")],
         "not a run directory"),
    ],
    "data wvs": [
        ("missing release", lambda w: ["data", "wvs", str(w / "nope.csv"), "--out", str(w / "d"), "--items-from",
                                       str(w / "data")], "not found"),
        ("not the release layout", lambda w: ["data", "wvs", str(w / "texts.jsonl"), "--out", str(w / "d"),
                                              "--items-from", str(w / "data")], "no column B_COUNTRY"),
        ("no item columns", lambda w: ["data", "wvs", str(w / "release_no_items.csv"), "--out", str(w / "d"),
                                       "--items-from", str(w / "data")], "none of the item columns"),
        ("out already has wvs", lambda w: ["data", "wvs", str(w / "release_no_items.csv"), "--out", str(w / "data"),
                                           "--items-from", str(w / "data")], "already exists"),
        ("no item table", lambda w: ["data", "wvs", str(w / "release_no_items.csv"), "--out", str(w / "d"),
                                     "--items-from", str(w / "empty")], "no WVS questions"),
        *[(f"pool {case}", lambda w, pools=pools: ["data", "wvs", str(w / "release.csv"), "--out", str(w / "d"),
                                                   "--items-from", str(w / "data"),
                                                   *(x for p in pools for x in ("--pool", p))], says)
          for case, pools, says in [
              ("without =", ["Arabic"], "expected NAME=ALPHA3,ALPHA3"),
              ("without a name", ["=CHN,DEU"], "expected NAME=ALPHA3,ALPHA3"),
              ("without countries", ["Mix="], "expected NAME=ALPHA3,ALPHA3"),
              ("name not a file name", ["../x=CHN,DEU"], "must be letters, digits and _"),
              ("country not alpha-3", ["Mix=CHN,Germany"], "'GERMANY' is not an ISO alpha-3"),
              ("empty country", ["Mix=CHN,,DEU"], "'an empty entry' is not an ISO alpha-3"),
              ("one country", ["Mix=CHN"], "two or more countries"),
              ("country twice", ["Mix=CHN,DEU,chn"], "CHN is listed twice"),
              ("a country's own file", ["Germany=DEU,KOR"], "is country DEU's own"),
              ("a culture whose file is a country's", ["German=DEU,KOR"], "(the file of the culture German)"),
              ("an alpha-3 name", ["KOR=CHN,DEU"], "is country KOR's own"),
              ("same name twice", ["Mix=CHN,DEU", "Mix=CHN,KOR"], "already written by --pool Mix"),
              ("country not in the release", ["Mix=CHN,EGY"], "EGY not in the release"),
          ]],
    ],
    "sim-server": [
        ("faults not JSON", lambda w: ["sim-server", "--faults", "{oops"], "sim-server"),
        ("unknown fault kind", lambda w: ["sim-server", "--faults", '[{"kind": "gremlins"}]'], "sim-server"),
        ("script missing", lambda w: ["sim-server", "--script", str(w / "nope.yaml")], "sim-server"),
        ("script rule without reply", lambda w: ["sim-server", "--script", str(w / "script_bad.yaml")], "sim-server"),
        ("zero rpm", lambda w: ["sim-server", "--rpm", "0"], "--rpm"),
    ],
    "bench": [
        ("zero conversations", lambda w: ["bench", "throughput", "--conversations", "0"], "--conversations"),
        ("negative latency", lambda w: ["bench", "throughput", "--latency-ms", "-1"], "--latency-ms"),
        ("zero trials", lambda w: ["bench", "crash-resume", "--trials", "0"], "--trials"),
        ("zero workers", lambda w: ["bench", "ray", "--workers", "0"], "--workers"),
        ("unknown bench", lambda w: ["bench", "warp-speed"], "invalid choice"),
    ],
}
TABLE = [(cmd, name, argv, says) for cmd, cases in CASES.items() for name, argv, says in cases]


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def test_every_command_has_at_least_five_cases():
    assert {cmd: len(cases) for cmd, cases in CASES.items() if len(cases) < 5} == {}


@pytest.mark.parametrize("cmd,name,argv,says", TABLE, ids=[f"{c}: {n}" for c, n, _, _ in TABLE])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(ws, capsys, monkeypatch, cmd, name, argv, says):
    monkeypatch.delenv("CP_TEST_KEY_UNSET", raising=False)
    if name == "key variable unset":
        (ws / "texts_as_sft.jsonl").write_text("".join(json.dumps({"messages": [  # passes the format check
            {"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}) + "\n"
            for i in range(10)))
    before = _snapshot(ws)
    try:
        code = cli.main(argv(ws))
    except SystemExit as exc:  # argparse
        code = exc.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("culturepark"), err
    assert says in lines[0], lines[0]
    assert _snapshot(ws) == before
