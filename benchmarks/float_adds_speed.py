#!/usr/bin/env python
"""What float residual adds cost in ExecuTorch: SAFMN x4 zoo, int8 PTQ defaults vs float adds + first/last conv
float, and fp32, at 184x320, 2 threads, timed interleaved (median of 7), so the ratios come from one run.

    .venv/bin/python benchmarks/float_adds_speed.py        # ~4 min on 2 cores
"""
import statistics
import tempfile
import time
from pathlib import Path

import torch

torch.set_num_threads(2)
from edgesr.models import create
from edgesr.quantize import QuantConfig, ptq, save_quantized
from edgesr.export.exporters import export_by_name, example_input
from edgesr.export.runtimes import load_runner
from edgesr.export.spec import read_sidecar
D = str(Path(__file__).resolve().parents[2] / 'shared' / 'data') + '/'
out = tempfile.mkdtemp() + '/'
m=create('safmn',4,weights='zoo')
paths={}
for tag,kw in [('int8',{}),('int8_fa',dict(float_adds=True,keep_float=['first','last']))]:
    q=ptq(m,'executorch',[D+'T91',D+'BSD200'],QuantConfig(**kw))
    ck=save_quantized(q,out+tag+'.pt')
    p=out+tag+'.pte'
    info=export_by_name('safmn',4,'executorch','int8',(184,320),p,weights='zoo',quantized=str(ck))
    print(tag,'delegated',info.delegation['percent_delegated'], flush=True)
    paths[tag]=p
p=out+'fp32.pte'; export_by_name('safmn',4,'executorch','fp32',(184,320),p,weights='zoo'); paths['fp32']=p
x=example_input((184,320)).numpy()
runs={t:load_runner(p,read_sidecar(p),threads=2) for t,p in paths.items()}
for r in runs.values(): r(x)
ts={t:[] for t in runs}
for i in range(7):
    for t,r in runs.items():
        s=time.perf_counter(); r(x); ts[t].append((time.perf_counter()-s)*1000)
med={t:statistics.median(v) for t,v in ts.items()}
print({t:round(v,1) for t,v in med.items()}, 'int8 speed-up', round(med['fp32']/med['int8'],2), 'int8/fa speed-up', round(med['fp32']/med['int8_fa'],2))
