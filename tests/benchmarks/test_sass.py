"""``benchmarks/_sass.py``: what a chunk runs, read from a kernel's machine code (here a made-up listing in
``nvdisasm -c -g``'s format: a chunk loop around a tile loop)."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
import _sass  # noqa: E402

LISTING = """
	//## File "/r/titans/ops/memory/triton_seq.py", line 110
        /*0000*/                   MOV R1, c[0x0][0x28] ;
.L_x_0:
        /*0010*/                   LDG.E R2, desc[UR4][R4.64] ;
	//## File "/r/titans/ops/memory/triton_blocks.py", line 45
.L_x_1:
        /*0020*/                   FFMA R3, R2, R2, R3 ;
        /*0030*/               @P0 STL [R1+0x8], R3 ;
        /*0040*/                   HGMMA.64x16x8.F32.TF32 R32, R120, gdesc[UR28], RZ, !UPT ;
	//## File "/r/titans/ops/memory/triton_phased.py", line 101
        /*0050*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;
        /*0060*/              @!P1 BRA `(.L_x_1) ;
        /*0070*/                   LDL R5, [R1+0x8] ;
        /*0080*/                   BRA `(.L_x_0) ;
        /*0090*/                   EXIT ;
"""


def test_loops_and_what_a_chunk_runs():
    s = _sass.parse(LISTING)
    assert [text.split()[0] for _, text, _ in s.code][:4] == ["MOV", "LDG.E", "FFMA", "STL"]  # predicates dropped
    assert s.inner == [(0x20, 0x60)]  # the tile loop; the chunk loop holds it, so is not innermost
    spills = _sass.loop_spills(s, trips=4)
    assert spills["spill_instructions"] == 2 and spills["spills_per_chunk"] == 4 + 1
    assert spills["spills_by_loop"] == "triton_phased.py:101-101: 1; outside: 1"
    mix = _sass.instruction_mix(s, trips=4)
    # in the loop 5 instructions x 4 trips, outside it 5 (MOV, LDG, LDL, BRA, EXIT) once
    assert mix["instructions_per_chunk"] == 25
    assert mix["mix"] == {"tensor core": 4, "float": 4, "spill": 5, "sync": 4, "other": 7, "global memory": 1}
    assert mix["ops"] == {"FFMA": 4, "STL": 4, "HGMMA": 4, "BAR": 4, "BRA": 5, "MOV": 1, "LDG": 1, "LDL": 1, "EXIT": 1}
    # by line: FFMA, STL, HGMMA x 4 at line 45; BAR, BRA x 4 and LDL, BRA, EXIT at line 101; MOV, LDG at 110
    assert mix["top_lines"] == "triton_blocks.py:45 48%; triton_phased.py:101 44%; triton_seq.py:110 8%"
