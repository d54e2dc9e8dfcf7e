"""`corevital run`: instrument one generate call, print its health report, store it locally."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from .errors import FAILURE, CliError
from .files import check_writable, write_atomically
from .progress import Progress, TokenCounter


def run(args: argparse.Namespace) -> int:
    # every argument is checked before the model loads; the store is created only once a run is there to keep
    prompt = _prompt(args)
    _check_sampling(args)
    rag = _rag_context(args.rag_context)
    if args.json:
        check_writable(args.json, "--json")
    store = _store(args)  # a locked, corrupt or foreign store fails here, and is not written to

    from ..analysis import prompt_hash
    from ..report import Report
    from . import otel

    telemetry = otel.set_up(prompt_hash(prompt, ""))
    try:
        completion, token_text = _generate(args, prompt, telemetry, rag)
        spans = telemetry.spans.get_finished_spans()
    finally:
        telemetry.shutdown()
    if not spans:
        raise CliError("generate ran but no CoreVital span was recorded (is OTEL_SDK_DISABLED set?)", FAILURE)
    _print_results(args, Report.from_span(spans[-1]), completion, token_text, store, spans, telemetry)
    return 0


def _generate(args, prompt: str, telemetry, rag):
    """Load the model, generate once under the instrumentation; returns the completion and its TokenText."""
    import transformers

    from .. import CoreVitalInstrumentor
    from .. import observe
    from . import models

    hf_logging = transformers.utils.logging
    verbosity, progress_bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # our own progress and report say what matters; no library chatter
    hf_logging.disable_progress_bar()
    instrumentor = CoreVitalInstrumentor()
    capture = {} if args.capture is None else {"capture_mode": args.capture}
    instrumentor.instrument(tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider, **capture)
    try:
        device = models.resolve_device(args.device)
        with Progress(f"Loading {args.model or 'SmolLM2-135M-Instruct (default)'}", enabled=not args.quiet):
            loaded = models.load(args.model, device)
        inputs = _inputs(loaded.tokenizer, prompt, args.chat_template).to(device)
        options = _generate_options(args, loaded.tokenizer)
        with Progress("Generating", enabled=not args.quiet) as progress:
            counter = TokenCounter(progress, args.max_new_tokens)
            with observe(rag=rag) if rag is not None else contextlib.nullcontext():
                try:
                    output = loaded.model.generate(**inputs, streamer=counter, **options)
                except (ValueError, TypeError, RuntimeError) as exc:
                    raise CliError(f"generate failed: {_first_line(exc)}", FAILURE) from None
    finally:
        instrumentor.uninstrument()
        hf_logging.set_verbosity(verbosity)
        if progress_bars:
            hf_logging.enable_progress_bar()
    token_text = _token_text(loaded, inputs, output)
    # several answers: the report shows each one from its tokens
    return (_completion(loaded, inputs, output) if len(output) == 1 else None), token_text


def _print_results(args, report, completion: str | None, token_text, store, spans, telemetry) -> None:
    from .render import render, report_json, use_colour

    json_to_stdout = args.json == "-"
    out = sys.stderr if json_to_stdout else sys.stdout  # with --json -, stdout carries the JSON alone
    print(render(report, colour=use_colour(out), completion=completion, token_text=token_text), file=out)
    if args.json:
        text = report_json(report, token_text)
        if json_to_stdout:
            print(text)
        else:
            write_atomically(Path(args.json), text + "\n")
            print(f"\nReport JSON written to {args.json}", file=out)
    if store is not None:
        store.add_spans(spans, token_text={report.span_id: token_text.to_json()})
        print(
            f"\nStored as run {report.span_id} in {store.path}  "
            f"(corevital runs show {report.span_id} | corevital report {report.span_id} --html report.html)",
            file=out,
        )
    outcome = telemetry.otlp_outcome()
    if outcome is not None:
        ok, message = outcome
        print(message if ok else f"corevital: warning: {message}", file=out if ok else sys.stderr)


def _store(args):
    if args.no_store:
        return None
    from ..store import RunStore

    store = RunStore(args.db, args.db_timeout)
    store.check_writable()
    return store


def _prompt(args) -> str:
    """The prompt from PROMPT, --prompt or --prompt-file (exactly one), as valid, non-empty text."""
    given = [(name, value) for name, value in (("PROMPT", args.prompt), ("--prompt", args.prompt_option),
                                               ("--prompt-file", args.prompt_file)) if value is not None]
    if not given:
        raise CliError("no prompt: pass it as `corevital run \"Name three colours.\"`, --prompt TEXT or --prompt-file FILE")
    if len(given) > 1:
        raise CliError(f"the prompt is given more than once ({' and '.join(name for name, _ in given)}); pass only one")
    name, value = given[0]
    if name == "--prompt-file":
        name, value = f"--prompt-file {value}", _read_prompt_file(value)
    else:
        try:
            value.encode("utf-8")  # undecodable bytes on the command line arrive as lone surrogates
        except UnicodeEncodeError:
            raise CliError(f"{name}: not valid UTF-8 text; pass UTF-8 (or a UTF-8 file with --prompt-file)") from None
    if not value.strip():
        raise CliError(f"{name} is empty; pass the text to generate from, e.g. corevital run 'Name three colours.'")
    return value


def _read_prompt_file(path: str) -> str:
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except FileNotFoundError:
        raise CliError(f"--prompt-file {path}: no such file") from None
    except OSError as exc:
        raise CliError(f"--prompt-file {path}: cannot read it ({exc.strerror})") from None
    try:
        return data.decode("utf-8-sig").rstrip("\r\n")  # a file's trailing line breaks are not part of the prompt
    except UnicodeDecodeError as exc:
        raise CliError(f"--prompt-file {path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None


def _rag_context(path: str | None):
    if path is None:
        return None
    from ..rag import RagContext

    try:
        return RagContext.from_json_file(path)
    except FileNotFoundError:
        raise CliError(f"--rag-context {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"--rag-context {path}: cannot read it ({exc})") from None
    except ValueError as exc:
        raise CliError(f"--rag-context {path}: {exc}") from None


def _check_sampling(args) -> None:
    if args.max_new_tokens < 1:
        raise CliError(f"--max-new-tokens {args.max_new_tokens}: must be at least 1")
    if args.temperature is not None and args.temperature <= 0:
        raise CliError(f"--temperature {args.temperature}: must be above 0 (leave sampling off for greedy decoding)")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise CliError(f"--top-p {args.top_p}: must be in (0, 1]")
    if args.top_k is not None and args.top_k < 1:
        raise CliError(f"--top-k {args.top_k}: must be at least 1")
    if args.num_return_sequences < 1:
        raise CliError(f"--num-return-sequences {args.num_return_sequences}: must be at least 1")
    if args.num_return_sequences > 1 and not _sampling(args):
        raise CliError(f"--num-return-sequences {args.num_return_sequences}: greedy decoding returns one answer; add --sample")


def _sampling(args) -> bool:
    return args.sample or any(v is not None for v in (args.temperature, args.top_p, args.top_k))


def _generate_options(args, tokenizer) -> dict:
    import torch

    sampling = _sampling(args)
    options = {"max_new_tokens": args.max_new_tokens, "do_sample": sampling, "num_return_sequences": args.num_return_sequences}
    if sampling:
        options.update({k: v for k, v in (("temperature", args.temperature), ("top_p", args.top_p), ("top_k", args.top_k)) if v is not None})
    if args.seed is not None:
        torch.manual_seed(args.seed)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is not None:
        options["pad_token_id"] = pad
    return options


def _inputs(tokenizer, prompt: str, chat_template: str):
    use_template = chat_template == "on" or (chat_template == "auto" and getattr(tokenizer, "chat_template", None))
    if use_template:
        try:
            return tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
        except ValueError as exc:
            raise CliError(f"--chat-template on: the tokenizer has no usable chat template ({_first_line(exc)})") from None
    return tokenizer(prompt, return_tensors="pt")


def _completion(loaded, inputs, output) -> str:
    ids = output[0]
    if not loaded.model.config.is_encoder_decoder:
        ids = ids[inputs["input_ids"].shape[1]:]
    return loaded.tokenizer.decode(ids, skip_special_tokens=True).strip()


def _token_text(loaded, inputs, output):
    """The prompt's and every returned sequence's tokens as text (decoding step i -> completion[row][i])."""
    from ..capture.standalone import eos_token_ids_of
    from ..html_report.tokens import TokenText

    prompt_ids = inputs["input_ids"][0].tolist()
    start = 1 if loaded.model.config.is_encoder_decoder else len(prompt_ids)  # seq2seq rows start with the decoder start token
    stops = eos_token_ids_of(loaded.model)
    completion = [_pieces(loaded.tokenizer, _until_stop(row[start:].tolist(), stops)) for row in output]
    return TokenText(completion=completion, prompt=_pieces(loaded.tokenizer, prompt_ids))


def _until_stop(ids: list[int], stops: set[int]) -> list[int]:
    """The ids up to and including the first stop token: what follows in a batch is padding."""
    for index, token in enumerate(ids):
        if token in stops:
            return ids[: index + 1]
    return ids


def _pieces(tokenizer, ids: list[int]) -> list[str]:
    """Each token's share of the decoded text: what decoding one more token adds.

    Decoding tokens one at a time would split multi-byte characters and lose the spaces that
    SentencePiece and byte-level BPE attach to their neighbours; the difference of growing
    prefixes gives every character to the token that completes it.
    """
    pieces, decoded = [], ""
    for end in range(1, len(ids) + 1):
        text = tokenizer.decode(ids[:end], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        shared = len(os.path.commonprefix([decoded, text]))
        pieces.append(text[shared:])
        decoded = text
    return pieces


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


__all__ = ["run"]
