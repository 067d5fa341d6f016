"""Provenance reading: C2PA manifests signed in the test and by other tools, and generator metadata."""

import io
import json

import cv2
import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from pipeline.media.provenance import read_provenance
from pipeline.synthetic import photo, write_video

XMP = (
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    '<rdf:Description xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
    'Iptc4xmpExt:DigitalSourceType="http://cv.iptc.org/newscodes/digitalsourcetype/{}"/></rdf:RDF></x:xmpmeta>'
)
A1111 = "a cat on a sofa\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Model: sd15"


def _encoded(fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(photo("coffee")[:96, :128])).save(buffer, fmt, **options)
    return buffer.getvalue()


def test_a_valid_manifest_declaring_ai_generation_is_evidence(c2pa_sign):
    for fmt, mime, source_type in (("JPEG", "image/jpeg", "trainedAlgorithmicMedia"),
                                   ("PNG", "image/png", "compositeWithTrainedAlgorithmicMedia")):  # fmt: skip
        provenance = read_provenance(c2pa_sign(_encoded(fmt), mime, source_type))
        c2pa = provenance.c2pa
        assert c2pa["state"] == "valid" and c2pa["validation_state"] == "Valid" and not c2pa["trusted"]
        assert "signingCredential.untrusted" in c2pa["status_codes"]  # a test signer is on no trust list
        assert c2pa["ai_source_types"] == [source_type] and c2pa["signer"] == "mediacheck test signer"
        assert "mediacheck-test-generator" in c2pa["claim_generator"] and "c2pa.created" in c2pa["actions"]
        assert provenance.declares_ai
        assert provenance.evidence() == [
            f"C2PA manifest signed by mediacheck test signer (not on a trust list) declares {source_type}"
        ]


def test_a_signed_video_is_read_too(c2pa_sign, tmp_path):
    clip = tmp_path / "clip.mp4"
    write_video(clip, [photo("astronaut")[:64, :64]] * 6)
    provenance = read_provenance(c2pa_sign(clip.read_bytes(), "video/mp4"))
    assert provenance.c2pa["state"] == "valid" and provenance.declares_ai


def test_tampered_stripped_and_camera_manifests_are_never_evidence_of_ai(c2pa_sign):
    signed = c2pa_sign(_encoded("JPEG"), "image/jpeg")
    tampered = bytearray(signed)
    tampered[-300] ^= 0xFF  # one bit of the image data after signing
    broken = read_provenance(bytes(tampered))
    assert broken.c2pa["state"] == "invalid" and broken.c2pa["ai_source_types"] and not broken.declares_ai
    stripped = cv2.imencode(".jpg", cv2.imdecode(np.frombuffer(signed, np.uint8), cv2.IMREAD_COLOR))[1].tobytes()
    assert read_provenance(stripped).c2pa == {"state": "absent"} and not read_provenance(stripped).declares_ai
    captured = read_provenance(c2pa_sign(_encoded("JPEG"), "image/jpeg", "digitalCapture"))
    assert captured.c2pa["state"] == "valid" and captured.c2pa["digital_source_types"] == ["digitalCapture"]
    assert not captured.declares_ai


def test_generator_text_chunks_in_pngs():
    def png(**chunks) -> bytes:
        info = PngImagePlugin.PngInfo()
        for key, value in chunks.items():
            info.add_text(key, value)
        return _encoded("PNG", pnginfo=info)

    assert "Stable Diffusion web UI" in read_provenance(png(parameters=A1111)).evidence()[0]
    comfy_prompt = json.dumps({"3": {"class_type": "KSampler", "inputs": {"seed": 1}}})
    comfy_workflow = json.dumps({"nodes": [{"id": 3, "type": "KSampler"}], "links": []})
    assert read_provenance(png(prompt=comfy_prompt)).evidence() == ["PNG text 'prompt' holds a ComfyUI graph"]
    assert read_provenance(png(workflow=comfy_workflow)).declares_ai
    plain = read_provenance(png(parameters="exposure +1", prompt="write a caption", Title="holiday"))
    assert not plain.declares_ai and plain.generator == []


def test_xmp_digital_source_type_and_exif_software():
    assert read_provenance(_encoded("JPEG", xmp=XMP.format("trainedAlgorithmicMedia").encode())).evidence() == [
        "XMP DigitalSourceType declares trainedAlgorithmicMedia"
    ]
    assert not read_provenance(_encoded("JPEG", xmp=XMP.format("digitalCapture").encode())).declares_ai
    generated, edited = Image.Exif(), Image.Exif()
    generated[0x0131] = "Midjourney v6"
    edited[0x0131] = "Adobe Photoshop 25.0 (Windows)"
    assert "Midjourney" in read_provenance(_encoded("JPEG", exif=generated)).evidence()[0]
    assert not read_provenance(_encoded("JPEG", exif=edited)).declares_ai


def test_camera_metadata_is_recorded_as_weak_evidence_only():
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Canon", "EOS R5"
    exif.get_ifd(0x8769)[0x829A] = 0.004
    provenance = read_provenance(_encoded("JPEG", exif=exif))
    assert provenance.camera == {"make": "Canon", "model": "EOS R5", "exposure_time": "0.004"}
    assert not provenance.declares_ai and provenance.to_dict()["evidence"] == []


def test_malformed_and_unknown_files_never_raise():
    assert read_provenance(b"\xff\xd8\xff\xe1\x00\x10Exif\x00\x00garbage").declares_ai is False
    assert read_provenance(b"plain text").c2pa["state"] == "unsupported"
    assert read_provenance(b"").declares_ai is False


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("name", "state", "source_types"),
    [
        ("C.jpg", "valid", ["algorithmicMedia"]),  # procedural, not trained: no AI declaration
        ("CA.jpg", "valid", []),
        ("adobe-20220124-E-clm-CAICAI.jpg", "invalid", []),
        ("cloud.jpg", "unverifiable", None),  # remote manifest, not fetched: unknown, not absent
        ("no_manifest.jpg", "absent", None),
        ("video1.mp4", "valid", []),
        ("video1_no_manifest.mp4", "absent", None),
    ],
)
def test_manifests_written_by_other_tools(shared_datasets, name, state, source_types):
    provenance = read_provenance((shared_datasets / "c2pa" / name).read_bytes())
    assert provenance.c2pa["state"] == state
    if source_types is not None:
        assert provenance.c2pa["digital_source_types"] == source_types
    if name == "adobe-20220124-E-clm-CAICAI.jpg":
        assert "assertion.hashedURI.mismatch" in provenance.c2pa["status_codes"]
    if name == "cloud.jpg":
        assert provenance.c2pa["remote_url"].startswith("https://")
    assert not provenance.declares_ai
