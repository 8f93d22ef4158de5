{{ config(unique_key='term') }}
-- depends_on: {{ source('build', 'build_files') }}
{#- Every name part and ID of every patient and referring physician in the lake, upper
    case, 3+ characters: what Clean Descriptors (macros/deid.sql) must not let through
    in a free-text descriptor. PHI by construction: internal. Incremental: the terms of
    this build's batches not held yet, with a batch that brought them (the processed
    models check their descriptors again against new terms). #}
with patients as (
    select * from {{ raw_rows('patients') }}
),

studies as (
    select * from {{ raw_rows('studies') }}
),

terms as (
    {%- set sources = [('patients', 'PatientName'), ('patients', 'PatientID'), ('studies', 'ReferringPhysicianName'), ('studies', 'PatientID'), ('studies', 'AccessionNumber')] %}
    {%- for table, column in sources %}
    {%- set outer = loop %}
    {%- for part in [1, 2, 3] %}
    select split_part({{ raw_column(column) }}, '^', {{ part }}) as term, batch_id from {{ table }}
    {%- if not (outer.last and loop.last) %}
    union all
    {%- endif %}
    {%- endfor %}
    {%- endfor %}
),

cleaned as (
    select upper(trim(term)) as term, min(batch_id) as batch_id
    from terms
    where length(trim(term)) >= 3
    group by upper(trim(term))
)

select term, batch_id
from cleaned
{% if is_incremental() %}
where term not in (select term from {{ this }})
{% endif %}
