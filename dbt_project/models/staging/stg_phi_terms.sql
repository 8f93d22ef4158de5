{#- Every name part and ID of every patient and referring physician in the lake, upper
    case, 3+ characters: what Clean Descriptors (macros/deid.sql) must not let through
    in a free-text descriptor. PHI by construction: internal. -#}
with terms as (
    {%- set sources = [('patients', 'PatientName'), ('patients', 'PatientID'), ('studies', 'ReferringPhysicianName'), ('studies', 'PatientID'), ('studies', 'AccessionNumber')] %}
    {%- for table, column in sources %}
    {%- set outer = loop %}
    {%- for part in [1, 2, 3] %}
    select split_part({{ raw_column(column) }}, '^', {{ part }}) as term from {{ source('raw', table) }}
    {%- if not (outer.last and loop.last) %}
    union all
    {%- endif %}
    {%- endfor %}
    {%- endfor %}
)

select distinct upper(trim(term)) as term
from terms
where length(trim(term)) >= 3
