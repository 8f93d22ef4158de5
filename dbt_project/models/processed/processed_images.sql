{{ config(unique_key='sop_instance_pseudo_uid') }}
-- depends_on: {{ source('build', 'build_files') }}
-- depends_on: {{ ref('stg_images') }}
-- depends_on: {{ ref('stg_studies') }}
{#- Images with their preview JPEG. The preview was named in Python by the image's
    pseudonym (tasks/pixels/preview.py); the join goes through the same pseudonym map. #}
with images as (
    select * from {{ ref('images') }}
),

{% if is_incremental() -%}
-- the images rebuilt in this build (the same rows as processed.images rebuilt), and those with a new preview
changed as (
    select deid_changed.pseudo_uid as sop_instance_pseudo_uid
    from {{ ref('stg_images') }} as changed_images
    inner join {{ source('deid', 'deid_pseudonyms') }} as deid_changed
        on deid_changed.original = changed_images.sop_instance_uid
    where {{ study_in_build('changed_images') }}
    union
    select deid_changed.pseudo_uid as sop_instance_pseudo_uid
    from {{ ref('stg_previews') }} as changed_previews
    inner join {{ source('deid', 'deid_pseudonyms') }} as deid_changed
        on deid_changed.original = changed_previews.sop_instance_uid
    where {{ in_build('changed_previews') }}
),
{%- endif %}

previews as (
    select
        deid_sop.pseudo_uid as sop_instance_pseudo_uid,
        stg_previews.preview_key,
        stg_previews.preview_bytes,
        stg_previews.preview_width,
        stg_previews.preview_height,
        stg_previews.frame_index as preview_frame_index,
        stg_previews.ingested_at
    from {{ ref('stg_previews') }} as stg_previews
    left join {{ source('deid', 'deid_pseudonyms') }} as deid_sop
        on deid_sop.original = stg_previews.sop_instance_uid
),

joined as (
    select
        images.sop_instance_pseudo_uid,
        images.series_pseudo_uid,
        images.study_pseudo_uid,
        images.sop_class_uid,
        images.pixel_rows,
        images.pixel_columns,
        images.number_of_frames,
        images.photometric_interpretation,
        images.transfer_syntax_uid,
        images.has_pixel_data,
        images.burned_in_annotation,
        previews.preview_key,
        previews.preview_bytes,
        previews.preview_width,
        previews.preview_height,
        previews.preview_frame_index,
        greatest(images.ingested_at, coalesce(previews.ingested_at, images.ingested_at)) as ingested_at,
        images.patient_identity_removed,
        images.deidentification_method,
        images.deidentification_method_codes
    from images
    left join previews on images.sop_instance_pseudo_uid = previews.sop_instance_pseudo_uid
)

select * from joined
{% if is_incremental() %}
where sop_instance_pseudo_uid in (select sop_instance_pseudo_uid from changed)
{% endif %}
